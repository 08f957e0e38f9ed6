//! Compiles the etcd API subset (`proto/etcd_kv.proto`) for the side-by-side write
//! benchmark, with the same vendored `protoc` as `bulwark-proto`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/etcd_kv.proto";
    println!("cargo:rerun-if-changed={file}");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().build_server(false).compile_with_config(
        config,
        &[file],
        &["proto"],
    )?;
    Ok(())
}
