//! The route pieces `copy` and `bench` share, against the captured lab system
//! `s01_switch_cmbmix_fam15` (no O_DIRECT needed): 03:00.0, 04:00.0 and 05:00.0 (no CMB)
//! sit behind one switch, 06:00.0 on its own root port, so the kernel refuses
//! 03:00.0 -> 06:00.0 on that AMD family 15 host.

use super::*;

fn s01() -> System {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/truth/s01_switch_cmbmix_fam15/root");
    read_system(&root).unwrap()
}

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

fn nvme(b: &str, name: &str) -> ClientInfo {
    ClientInfo {
        device: Some(name.to_string()),
        bdf: Some(bdf(b)),
        why_not: None,
        because: None,
    }
}

fn refused_why(r: Result<(Vec<String>, Vec<String>), PlacementError>) -> String {
    match r {
        Err(PlacementError::P2pRefused { why, .. }) => why,
        other => panic!("expected a refusal: {other:?}"),
    }
}

#[test]
fn a_named_provider_the_kernel_allows_passes() {
    let sys = s01();
    let client = nvme("0000:04:00.0", "nvme1n1");
    let (model, warnings) =
        vet_named(&sys, bdf("0000:03:00.0"), &[&client], false, "bench").unwrap();
    assert!(model[0].starts_with("0000:03:00.0: allowed"), "{model:?}");
    assert!(
        warnings.iter().all(|w| !w.starts_with("--force")),
        "{warnings:?}"
    );
}

#[test]
fn a_named_provider_the_model_refuses_needs_force() {
    let sys = s01();
    let client = nvme("0000:06:00.0", "nvme3n1");
    let provider = bdf("0000:03:00.0");
    let why = refused_why(vet_named(&sys, provider, &[&client], false, "bench"));
    assert!(
        why.contains("so the bench would fail on its first request")
            && why.ends_with("(--force tries anyway)"),
        "{why}"
    );
    let (model, warnings) = vet_named(&sys, provider, &[&client], true, "copy").unwrap();
    assert!(model[0].contains("refused"), "{model:?}");
    assert_eq!(
        warnings,
        ["--force: trying 0000:03:00.0 although the model predicts the kernel refuses it"]
    );
}

#[test]
fn a_named_provider_is_refused_without_p2pmem_or_outside_the_system() {
    let sys = s01();
    let client = nvme("0000:04:00.0", "nvme1n1");
    let why = refused_why(vet_named(
        &sys,
        bdf("0000:05:00.0"),
        &[&client],
        true,
        "copy",
    ));
    assert!(why.contains("no p2pmem/ directory"), "{why}");
    let why = refused_why(vet_named(
        &sys,
        bdf("0000:7f:00.0"),
        &[&client],
        true,
        "copy",
    ));
    assert_eq!(why, "it is not a PCI function of this system");
}

#[test]
fn endpoints_that_cannot_take_p2pmem_are_refused_once_unless_forced() {
    let sys = s01();
    let file = |path: &str| ClientInfo {
        device: Some("vda".to_string()),
        bdf: None,
        why_not: Some(format!("{path} is a regular file on vda")),
        because: Some(FILE_BECAUSE),
    };
    let (a, b) = (file("/a"), file("/b"));
    let provider = bdf("0000:03:00.0");
    let why = refused_why(vet_named(&sys, provider, &[&a, &b], false, "copy"));
    assert!(
        why.starts_with("/a is a regular file on vda; /b is a regular file on vda: "),
        "{why}"
    );
    assert_eq!(why.matches(FILE_BECAUSE).count(), 1, "{why}");
    assert!(why.ends_with("(--force tries anyway)"), "{why}");
    let (_, warnings) = vet_named(&sys, provider, &[&a, &b], true, "copy").unwrap();
    assert!(
        warnings[0].starts_with("--force: trying p2pmem anyway although /a is a regular file"),
        "{warnings:?}"
    );
}

#[test]
fn an_unreadable_system_says_why_and_refuses_a_named_provider() {
    assert_eq!(
        routing_system(Path::new("/"), Via::Host).unwrap_err(),
        "not read (--via host)"
    );
    let missing = Path::new("/nonexistent/p2pmem-root");
    let why = routing_system(missing, Via::Auto).unwrap_err();
    assert_eq!(
        why,
        "cannot read the PCI topology below /nonexistent/p2pmem-root"
    );
    let e = unchecked(bdf("0000:03:00.0"), &why);
    assert_eq!(
        e.to_string(),
        "refusing the P2P path through 0000:03:00.0: the path cannot be checked: \
         cannot read the PCI topology below /nonexistent/p2pmem-root"
    );
}

#[test]
fn only_a_refusal_errno_with_p2pmem_gets_the_models_account() {
    let sys = s01();
    let client = nvme("0000:06:00.0", "nvme3n1");
    let p2p = Location::P2p(bdf("0000:03:00.0"));
    let remoteio = Some(Errno::REMOTEIO.raw_os_error());
    let got = refusal_explanation(p2p, remoteio, Some(&sys), Some(&client)).unwrap();
    assert!(
        got.starts_with("the kernel refuses 0000:03:00.0 -> 0000:06:00.0"),
        "{got}"
    );
    for errno in [Errno::INVAL, Errno::OPNOTSUPP] {
        assert!(
            refusal_explanation(p2p, Some(errno.raw_os_error()), Some(&sys), Some(&client))
                .is_some()
        );
    }
    assert_eq!(
        refusal_explanation(
            p2p,
            Some(Errno::IO.raw_os_error()),
            Some(&sys),
            Some(&client)
        ),
        None
    );
    assert_eq!(
        refusal_explanation(Location::Host, remoteio, Some(&sys), Some(&client)),
        None
    );
    assert_eq!(
        refusal_explanation(p2p, remoteio, None, Some(&client)),
        None
    );
    assert_eq!(refusal_explanation(p2p, remoteio, Some(&sys), None), None);
    assert_eq!(
        refusal_explanation(p2p, None, Some(&sys), Some(&client)),
        None
    );
}

#[test]
fn ties_are_said_naming_the_command() {
    let sys = s01();
    let clients = [bdf("0000:04:00.0")];
    let found = select::find(&sys.topology, &sys.rules, &clients).unwrap();
    let provider = found.best[0];
    let mut tied = found.clone();
    tied.best = vec![provider, provider];
    tied.best_distance = Some(4);
    let one = explain_choice(&sys, &found, provider, &clients, "bench");
    let two = explain_choice(&sys, &tied, provider, &clients, "bench");
    assert_eq!(two.len(), one.len() + 1);
    assert_eq!(
        two.last().unwrap(),
        "  2 providers tie at distance 4; the kernel would pick one at random, this bench takes the first"
    );
}
