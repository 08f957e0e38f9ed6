//! Compiles `bulwark/v1/*.proto` with a vendored `protoc`, so a fresh machine needs no
//! system package to build the workspace.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let files = [
        "bulwark/v1/raft.proto",
        "bulwark/v1/cluster.proto",
        "bulwark/v1/store.proto",
        "bulwark/v1/agent.proto",
        "bulwark/v1/policy.proto",
        "bulwark/v1/fleet.proto",
        "bulwark/v1/event.proto",
        "bulwark/v1/security.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // An event's fields are few and kept sorted by the controller: a BTreeMap decodes
    // without hashing and moves into storage as it is.
    config.btree_map([".bulwark.v1.AgentEvent.fields"]);
    tonic_prost_build::configure()
        .codec_path("crate::codec::LeanCodec")
        .file_descriptor_set_path(out.join("bulwark_descriptor.bin"))
        .compile_with_config(config, &files, &["."])?;
    Ok(())
}
