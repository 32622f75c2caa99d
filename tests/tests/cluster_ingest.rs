//! A cluster of in-process nodes in two AZs: any node takes any reading and
//! it ends at its device's owner; acks wait for the replica in the other
//! AZ; a node that leaves hands its devices over with their dedupe state;
//! and without a live node in the other AZ the configured policy holds.

use std::collections::BTreeMap;

use tonic::Code;
use vatio_config::NoOtherAz;
use vatio_proto::v1::{self, AckGuarantee};
use vatio_tests::cluster::{FOUR, TestCluster};
use vatio_tests::{T0_MS, batch, power};

const DEVICES: usize = 40;

fn device(i: usize) -> String {
    format!("meter-{i:02}")
}

/// Reading `seq` of every device, in one batch.
fn round(seq: u64) -> v1::IngestRequest {
    batch(
        seq,
        (0..DEVICES)
            .map(|i| power(&device(i), seq, T0_MS + seq as i64 * 100, 10.0))
            .collect(),
    )
}

async fn send(
    cluster: &TestCluster,
    via: &str,
    req: v1::IngestRequest,
) -> anyhow::Result<v1::IngestAck> {
    let mut client = cluster.node(via)?.ingest().await?;
    Ok(client.ingest_batch(req).await?.into_inner())
}

/// Per device, the readings counted over all nodes' time series, and
/// how many nodes share them.
async fn counts(cluster: &TestCluster) -> anyhow::Result<BTreeMap<String, (u64, usize)>> {
    let mut out = BTreeMap::new();
    for i in 0..DEVICES {
        let per_node = cluster.power_counts(&device(i), T0_MS).await?;
        out.insert(device(i), (per_node.values().sum(), per_node.len()));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_sent_to_one_node_reach_their_owners_with_replicated_acks() -> anyhow::Result<()> {
    let cluster = TestCluster::start(&FOUR, |_| {}).await?;
    for seq in 1..=5 {
        let ack = send(&cluster, "a1", round(seq)).await?;
        assert_eq!(ack.accepted, DEVICES as u32, "round {seq}: {ack:?}");
        assert_eq!(ack.guarantee, AckGuarantee::Replicated as i32);
    }
    // Sent again through another node: every reading is a duplicate.
    let again = send(&cluster, "b2", round(3)).await?;
    assert_eq!((again.accepted, again.duplicates), (0, DEVICES as u32));

    let statuses = cluster.statuses().await?;
    let owned: BTreeMap<&str, u64> = statuses
        .iter()
        .map(|(id, s)| {
            (
                id.as_str(),
                s.cluster.as_ref().map_or(0, |c| c.devices_owned),
            )
        })
        .collect();
    assert_eq!(
        owned.values().sum::<u64>(),
        DEVICES as u64,
        "each device has one owner: {owned:?}"
    );
    assert!(
        owned.values().all(|n| *n > 0),
        "placement spreads 40 devices over 4 nodes: {owned:?}"
    );
    let accepted: u64 = statuses.values().map(|s| s.readings_accepted).sum();
    assert_eq!(
        accepted,
        5 * DEVICES as u64,
        "each reading accepted once, by its owner"
    );
    let replicas: u64 = statuses
        .values()
        .map(|s| s.cluster.as_ref().map_or(0, |c| c.replica_steps_logged))
        .sum();
    assert!(
        replicas >= 5 * DEVICES as u64,
        "every step has a replica: {replicas}"
    );

    cluster.flush().await?;
    for (device, (count, nodes)) in counts(&cluster).await? {
        assert_eq!(
            (count, nodes),
            (5, 1),
            "{device}: its owner alone counts its readings"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_hands_its_devices_over_without_duplicates() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(&FOUR, |_| {}).await?;
    for seq in 1..=5 {
        send(&cluster, "a1", round(seq)).await?;
    }
    let b1_owned = cluster
        .node("b1")?
        .status()
        .await?
        .cluster
        .map_or(0, |c| c.devices_owned);
    assert!(b1_owned > 0);
    cluster.stop("b1").await?;

    // Readings b1 took are duplicates wherever its devices went.
    for seq in 1..=5 {
        let ack = send(&cluster, "a2", round(seq)).await?;
        assert_eq!(
            (ack.accepted, ack.duplicates),
            (0, DEVICES as u32),
            "round {seq} again: {ack:?}"
        );
    }
    for seq in 6..=10 {
        let ack = send(&cluster, "a2", round(seq)).await?;
        assert_eq!(ack.accepted, DEVICES as u32, "round {seq}: {ack:?}");
        assert_eq!(ack.guarantee, AckGuarantee::Replicated as i32);
    }
    let claimed: u64 = cluster
        .statuses()
        .await?
        .values()
        .map(|s| s.cluster.as_ref().map_or(0, |c| c.devices_claimed))
        .sum();
    assert!(
        claimed >= b1_owned,
        "b1's {b1_owned} devices were taken over ({claimed} claims)"
    );

    cluster.flush().await?;
    let mut split = 0;
    for (device, (count, nodes)) in counts(&cluster).await? {
        assert_eq!(
            count, 10,
            "{device}: every reading counted once over all nodes"
        );
        if nodes > 1 {
            split += 1;
        }
    }
    assert_eq!(
        split as u64, b1_owned,
        "b1's devices are counted by b1 and their new owner"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_other_az_replicated_acks_are_refused_by_default() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(&[("a1", "az-a"), ("b1", "az-b")], |_| {}).await?;
    let ack = send(&cluster, "a1", round(1)).await?;
    assert_eq!(ack.guarantee, AckGuarantee::Replicated as i32);
    cluster.stop("b1").await?;
    let before = cluster.node("a1")?.status().await?.readings_accepted;
    let refused = send(&cluster, "a1", round(2))
        .await
        .expect_err("no replica, no ack");
    let status = refused
        .downcast_ref::<tonic::Status>()
        .ok_or_else(|| anyhow::anyhow!("not a gRPC status: {refused}"))?;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("another AZ"), "{status:?}");
    let s = cluster.node("a1")?.status().await?;
    assert_eq!(
        s.readings_accepted, before,
        "nothing of the refused batch was taken"
    );
    assert!(s.cluster.is_some_and(|c| c.batches_refused_no_replica >= 1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_other_az_degrade_acks_locally_and_replicates_later() -> anyhow::Result<()> {
    let mut cluster =
        TestCluster::start(&[("a1", "az-a"), ("a2", "az-a"), ("b1", "az-b")], |cfg| {
            cfg.cluster.no_other_az = NoOtherAz::Degrade;
        })
        .await?;
    cluster.stop("b1").await?;
    let ack = send(&cluster, "a1", round(1)).await?;
    assert_eq!(ack.accepted, DEVICES as u32);
    assert_eq!(
        ack.guarantee,
        AckGuarantee::LocalLog as i32,
        "the ack says it is local only"
    );
    let s = cluster.node("a1")?.status().await?;
    assert!(s.cluster.is_some_and(|c| c.batches_acked_degraded >= 1));
    Ok(())
}

/// A node with peers to join that sees none of them yet may be the newest
/// member of a running cluster that holds its devices' lines: it takes no
/// device over during its start grace (three peer timeouts), then goes on
/// alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_sees_none_of_its_seeds_claims_only_after_its_start_grace() -> anyhow::Result<()>
{
    let peer_timeout = std::time::Duration::from_secs(1);
    let cluster = TestCluster::start(&[("a1", "az-a")], |cfg| {
        cfg.cluster.no_other_az = NoOtherAz::Degrade;
        cfg.cluster.peer_timeout = peer_timeout;
        // Nothing gossips there.
        cfg.cluster.seeds = vec!["127.0.0.1:9".to_owned()];
    })
    .await?;
    let mut client = cluster.node("a1")?.ingest().await?;
    let first = client.ingest_batch(round(1)).await;
    let status = first.expect_err("held back while it may not know the cluster");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        status.message().contains("learning the cluster's members"),
        "{}",
        status.message()
    );
    // After the grace it claims alone; a client sending again gets its ack.
    let deadline =
        tokio::time::Instant::now() + peer_timeout * 3 + std::time::Duration::from_secs(10);
    let ack = loop {
        match client.ingest_batch(round(1)).await {
            Ok(ack) => break ack.into_inner(),
            Err(s) if s.code() == Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(s) => anyhow::bail!("still refused: {s}"),
        }
    };
    assert_eq!(ack.accepted, DEVICES as u32);
    Ok(())
}
