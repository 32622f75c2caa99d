//! Nodes configured with `[cluster]` find each other by gossip: each one's
//! `Admin.Status` lists every member with its AZ, gRPC address and
//! readiness, and a node that shuts down is first announced not ready,
//! then leaves the others' view.

use std::time::Duration;

use vatio_actors::TreeOptions;
use vatio_proto::v1;
use vatio_tests::{TestNode, test_config};

fn members(s: &v1::StatusResponse) -> Vec<(String, String, bool)> {
    let mut m: Vec<_> = s
        .members
        .iter()
        .map(|m| (m.node_id.clone(), m.az.clone(), m.ready))
        .collect();
    m.sort();
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_in_two_azs_see_each_other() -> anyhow::Result<()> {
    let dir_a = tempfile::tempdir()?;
    let mut cfg_a = test_config(&dir_a);
    cfg_a.node.id = "node-a".into();
    cfg_a.node.az = "az-1".into();
    cfg_a.cluster.gossip_listen = "127.0.0.1:0".into();
    cfg_a.cluster.gossip_interval = Duration::from_millis(50);
    let a = TestNode::start_with(dir_a, cfg_a, TreeOptions::default(), None).await?;
    let seed = a.node.gossip_addr().expect("node a gossips");

    let dir_b = tempfile::tempdir()?;
    let mut cfg_b = test_config(&dir_b);
    cfg_b.node.id = "node-b".into();
    cfg_b.node.az = "az-2".into();
    cfg_b.cluster.gossip_listen = "127.0.0.1:0".into();
    cfg_b.cluster.seeds = vec![seed.to_string()];
    cfg_b.cluster.gossip_interval = Duration::from_millis(50);
    let b = TestNode::start_with(dir_b, cfg_b, TreeOptions::default(), None).await?;

    let both = vec![
        ("node-a".to_owned(), "az-1".to_owned(), true),
        ("node-b".to_owned(), "az-2".to_owned(), true),
    ];
    for t in [&a, &b] {
        let s = t
            .wait_for_status("both nodes are ready members", |s| members(s) == both)
            .await?;
        let b_entry = s.members.iter().find(|m| m.node_id == "node-b");
        assert_eq!(
            b_entry.map(|m| m.grpc_addr.clone()),
            Some(b.node.addr().to_string()),
            "members advertise their gRPC address"
        );
    }

    b.node.shutdown().await?;
    a.wait_for_status("node-b is gone or not ready", |s| {
        !s.members.iter().any(|m| m.node_id == "node-b" && m.ready)
    })
    .await?;
    a.node.shutdown().await?;
    Ok(())
}
