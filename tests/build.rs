//! The gRPC client of `bayspace.v1`, from the node's own protos, for the
//! tests that send requests the CLI would never build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../node/proto");
    let fds = protox::compile(["../node/proto/bayspace/v1/node.proto"], ["../node/proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
