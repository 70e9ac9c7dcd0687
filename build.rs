//! With the `node` feature, compiles the CRI v1 subset in `proto/` into tonic client and server
//! stubs. `protoc` comes from `protoc-bin-vendored`, so a fresh machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "node")]
    {
        let mut config = tonic_prost_build::Config::new();
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .compile_with_config(config, &["proto/runtime/v1/api.proto"], &["proto"])?;
    }
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
