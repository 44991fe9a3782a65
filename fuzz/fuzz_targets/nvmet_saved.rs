//! Saved nvmet files (`p2pmem nvmet save`, read back by `restore`): the JSON, its
//! validation, and the restore plan from an empty target to it and back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pmem_model::nvmet_plan::config::{SavedConfig, TargetConfig};
use p2pmem_model::nvmet_plan::restore::plan_restore;

fuzz_target!(|data: &[u8]| {
    let Ok(saved) = serde_json::from_slice::<SavedConfig>(data) else {
        return;
    };
    let Ok(config) = saved.into_config() else {
        return;
    };
    let empty = TargetConfig::default();
    let _ = plan_restore(&empty, &config);
    let _ = plan_restore(&config, &empty);
    assert!(
        plan_restore(&config, &config).is_empty(),
        "a no-op restore has steps"
    );
    // What was restored saves to a file that loads to the same configuration.
    let again = serde_json::to_vec(&SavedConfig::new(&config)).unwrap_or_default();
    let back = serde_json::from_slice::<SavedConfig>(&again)
        .ok()
        .and_then(|s| s.into_config().ok());
    assert_eq!(back.as_ref(), Some(&config));
});
