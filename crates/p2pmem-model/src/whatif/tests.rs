use super::*;

const V6_12: KernelVersion = KernelVersion::new(6, 12, 118);

fn bdf(s: &str) -> Bdf {
    s.parse().unwrap()
}

#[test]
fn disable_acs_redir_is_merged_not_added_twice() {
    let c = add_disable_acs_redir("console=ttyS0", V6_12, &[bdf("0000:00:07.0")]);
    assert_eq!(c, "console=ttyS0 pci=disable_acs_redir=0000:00:07.0");
    let c = add_disable_acs_redir(
        "quiet pci=disable_acs_redir=0000:00:08.0",
        V6_12,
        &[bdf("0000:00:07.0"), bdf("0000:00:08.0")],
    );
    assert_eq!(c, "quiet pci=disable_acs_redir=0000:00:08.0;0000:00:07.0");
    // Inside a combined pci= option the old list stays, and the new option (which
    // replaces it, being later) carries it too.
    let c = add_disable_acs_redir(
        "pci=noaer,disable_acs_redir=0000:00:08.0",
        V6_12,
        &[bdf("0000:00:07.0")],
    );
    assert_eq!(
        parse_cmdline(&c, V6_12).disable_acs_redir.as_deref(),
        Some("0000:00:08.0;0000:00:07.0")
    );
}

#[test]
fn config_acs_entries_that_set_the_redirect_are_rewritten() {
    let devs = [(bdf("0000:00:07.0"), Vec::new())];
    let c = clear_redirect_in_config_acs(
        "console=ttyS0 pci=config_acs=11xx@0000:00:07.0",
        V6_12,
        &devs,
    );
    assert_eq!(
        c.as_deref(),
        Some("console=ttyS0 pci=config_acs=0x00xx@0000:00:07.0")
    );
    // Other devices' entries are kept; nothing to change gives None.
    let c = clear_redirect_in_config_acs("pci=config_acs=1@00:05.0;11xx@00:07.0", V6_12, &devs);
    assert_eq!(
        c.as_deref(),
        Some("pci=config_acs=1@00:05.0;0x00xx@00:07.0")
    );
    assert_eq!(
        clear_redirect_in_config_acs("pci=config_acs=1@00:05.0", V6_12, &devs),
        None
    );
    assert_eq!(clear_redirect_in_config_acs("quiet", V6_12, &devs), None);
}
