//! System tests on a real systemd (an ephemeral systemd-nspawn machine, see
//! tests/common/machine.rs): the whole lifecycle, as MediaMTX and an operator see it.

mod common;

use std::time::Duration;

use common::machine::Machine;

#[test]
fn machine_boots_with_the_relay_template_loaded() {
    let m = Machine::boot("smoke");
    let props = m.show(
        "neustream-relay@smoke.service",
        &[
            "LoadState",
            "Slice",
            "CPUQuotaPerSecUSec",
            "MemoryMax",
            "TasksMax",
            "User",
        ],
    );
    assert_eq!(props["LoadState"], "loaded");
    assert_eq!(props["Slice"], "neustream.slice");
    assert_eq!(props["CPUQuotaPerSecUSec"], "500ms");
    assert_eq!(props["MemoryMax"], (256u64 << 20).to_string());
    assert_eq!(props["TasksMax"], "128");
    let id = m.ok(&["id", "mediamtx"]);
    assert!(id.contains("mediamtx"), "{id}");
    let dir = m.ok(&["stat", "-c", "%a %U", "/run/neustream/streams"]);
    assert_eq!(dir.trim(), "700 mediamtx");
    assert!(m.wait_state(
        "neustream-relay@smoke.service",
        "inactive",
        Duration::from_secs(1)
    ));
}
