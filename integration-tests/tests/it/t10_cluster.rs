//! Elect and serve: writes through any node are applied identically everywhere.

use std::time::Duration;

use anyhow::Result;
use bulwark_controller::client::ReadMode;
use bulwark_integration_tests::{Cluster, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_apply_the_same_records_with_the_same_revisions() -> Result<()> {
    let cluster = Cluster::start(3).await?;
    let ids = [1u64, 2, 3];
    // 1,000 writes, spread over the three nodes (followers forward to the leader).
    let clients: Vec<_> = ids.iter().map(|&id| cluster.node_client(id)).collect::<Result<_>>()?;
    let mut revisions = Vec::new();
    for i in 0..1000u64 {
        let client = &clients[(i % 3) as usize];
        let reply =
            client.put("policy", &format!("p{i:04}"), format!("v{i}").into_bytes(), None).await?;
        revisions.push(reply.revision);
    }
    // Every acknowledged write got the next revision.
    assert_eq!(revisions, (1..=1000).collect::<Vec<_>>());

    // All three nodes apply the same records at the same revisions.
    for &id in &ids {
        let client = cluster.node_client(id)?;
        let list = eventually("node to apply revision 1000", Duration::from_secs(10), || {
            let client = client.clone();
            async move {
                let list = client.list("policy", ReadMode::Stale).await?;
                anyhow::ensure!(list.revision == 1000, "node {id} at revision {}", list.revision);
                Ok(list)
            }
        })
        .await?;
        assert_eq!(list.records.len(), 1000);
        for (i, r) in list.records.iter().enumerate() {
            assert_eq!(r.key, format!("p{i:04}"));
            assert_eq!(r.value, format!("v{i}").into_bytes());
            assert_eq!(r.mod_revision, i as u64 + 1, "node {id} key {}", r.key);
        }
    }

    // A linearizable read on a follower sees the latest write at once.
    let leader = cluster.wait_for_leader(Duration::from_secs(5)).await?;
    let follower = ids.into_iter().find(|&id| id != leader).unwrap_or(1);
    let put = cluster.node_client(leader)?.put("policy", "fresh", b"now".to_vec(), None).await?;
    let got = cluster.node_client(follower)?.get("policy", "fresh", ReadMode::Linearizable).await?;
    assert_eq!(got.record.map(|r| r.value), Some(b"now".to_vec()));
    assert!(got.revision >= put.revision);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_health_and_requires_a_client_certificate() -> Result<()> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let cluster = Cluster::start(3).await?;
    let ca = Certificate::from_pem(std::fs::read(&cluster.admin.ca)?);
    let identity =
        Identity::from_pem(std::fs::read(&cluster.admin.cert)?, std::fs::read(&cluster.admin.key)?);
    let channel = |tls: ClientTlsConfig, id: u64| {
        Channel::from_shared(format!("https://{}", cluster.addr(id))).map(|e| e.tls_config(tls))
    };
    for id in [1, 2, 3] {
        let tls = ClientTlsConfig::new().ca_certificate(ca.clone()).identity(identity.clone());
        let mut health = HealthClient::new(channel(tls, id)??.connect().await?);
        let service = "bulwark.v1.StoreService".to_owned();
        let reply = health.check(HealthCheckRequest { service }).await?.into_inner();
        assert_eq!(reply.status, ServingStatus::Serving as i32, "node {id}");
    }

    // Without a client certificate: health (for probes) answers, nothing else does.
    let anonymous = ClientTlsConfig::new().ca_certificate(ca.clone());
    let conn = channel(anonymous, 1)??.connect().await?;
    let mut health = HealthClient::new(conn.clone());
    health.check(HealthCheckRequest { service: String::new() }).await?;
    let mut store = bulwark_proto::v1::store_service_client::StoreServiceClient::new(conn);
    let req = bulwark_proto::v1::ListRequest { kind: String::new(), consistency: 0 };
    let status = store.list(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(status.message(), "/bulwark.v1.StoreService/List requires a client certificate");

    // A certificate from another CA is refused too.
    let other = bulwark_integration_tests::certs::TestPki::create(&cluster.dir().join("other-ca"))?;
    let stranger = other.admin("stranger")?;
    let tls = ClientTlsConfig::new().ca_certificate(ca).identity(Identity::from_pem(
        std::fs::read(&stranger.cert)?,
        std::fs::read(&stranger.key)?,
    ));
    let refused = async {
        let mut health = HealthClient::new(channel(tls, 1)??.connect().await?);
        health.check(HealthCheckRequest { service: String::new() }).await?;
        anyhow::Ok(())
    }
    .await;
    assert!(refused.is_err(), "a client of another CA was served");
    Ok(())
}
