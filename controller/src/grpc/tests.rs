use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use futures::StreamExt;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::*;
use crate::pki::Ca;
use crate::tls::{TlsFiles, TlsMaterial};

/// A controller's TLS material, as files in `dir`.
fn material(dir: &std::path::Path) -> TlsMaterial {
    let ca = Ca::generate("test CA").unwrap();
    let issued = ca.issue_controller(1, &[], &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).unwrap();
    let files =
        TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("c.pem"), key: dir.join("k.pem") };
    std::fs::write(&files.ca, ca.cert_pem()).unwrap();
    std::fs::write(&files.cert, &issued.cert_pem).unwrap();
    std::fs::write(&files.key, &issued.key_pem).unwrap();
    TlsMaterial::load(&files).unwrap()
}

fn localhost() -> ServerName<'static> {
    ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into())
}

/// A client that sends its ClientHello and then nothing: the server holds a handshake for
/// it (and, without the peer ALPN, a permit) until the connection closes. Returns once the
/// server has answered, i.e. holds its permit.
async fn stalled_hello(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TcpStream {
    let mut conn = rustls::ClientConnection::new(config, localhost()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&hello).await.unwrap();
    let mut reply = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut reply)).await;
    assert!(matches!(read, Ok(Ok(1))), "the server did not answer a ClientHello: {read:?}");
    tcp
}

async fn handshake(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<()> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config).connect(localhost(), tcp).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_completes_its_handshake_while_agents_wait_for_a_turn() {
    let dir = tempfile::tempdir().unwrap();
    let tls = material(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (mut incoming, task) =
        tls_incoming(listener, Arc::new(tls.rustls_server_config().unwrap()));
    let peer = Arc::new(tls.rustls_peer_config().unwrap());
    let mut agent = tls.rustls_peer_config().unwrap();
    agent.alpn_protocols = vec![b"h2".to_vec()];
    let agent = Arc::new(agent);

    // Every permit taken by clients that never finish their handshake.
    let permits = HANDSHAKES_PER_CORE * std::thread::available_parallelism().unwrap().get();
    let mut stalled = Vec::new();
    for _ in 0..permits {
        stalled.push(stalled_hello(addr, agent.clone()).await);
    }

    let waiting = tokio::spawn(handshake(addr, agent.clone()));
    // A check that nothing happens: half a second without a permit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "an agent's handshake went ahead of the queue");

    tokio::time::timeout(Duration::from_secs(5), handshake(addr, peer))
        .await
        .expect("the peer's handshake waited behind the agents")
        .unwrap();
    let served = tokio::time::timeout(Duration::from_secs(5), incoming.next()).await.unwrap();
    assert!(matches!(served, Some(Ok(_))), "the peer's connection was not handed on");

    // The queue moves on as soon as permits come back.
    drop(stalled);
    tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();
    task.abort();
}
