//! Cluster-wide queries and dead letters: every node keeps the readings it
//! delivered, and the letters it refused, in its own stores; any node
//! answers a query, lists or replays dead letters for the whole cluster by
//! asking every member; `scope = NODE` keeps to one node.

use std::collections::BTreeMap;

use vatio_proto::v1::{self, QueryScope};
use vatio_stores::{DeadLetterReason, NewDeadLetter, RawReading};
use vatio_tests::cluster::{FOUR, TestCluster};
use vatio_tests::{T0_MS, TestNode, batch, power, reading};

const DEVICES: usize = 40;
const ROUNDS: u64 = 5;

fn device(i: usize) -> String {
    format!("meter-{i:02}")
}

/// Meter `i`'s power in round `seq`: distinct per meter and round, so a
/// share counted twice or missed changes the totals.
fn kw(i: usize, seq: u64) -> f64 {
    i as f64 * 10.0 + seq as f64
}

/// Reading `seq` of every meter, in one batch, all in the minute at T0.
fn round(seq: u64) -> v1::IngestRequest {
    batch(
        seq,
        (0..DEVICES)
            .map(|i| power(&device(i), seq, T0_MS + seq as i64 * 100, kw(i, seq)))
            .collect(),
    )
}

/// The plant's power in the minute at T0: each meter's mean over the rounds.
fn expected_total_kw() -> f64 {
    (0..DEVICES)
        .map(|i| (1..=ROUNDS).map(|s| kw(i, s)).sum::<f64>() / ROUNDS as f64)
        .sum()
}

fn power_flow(scope: QueryScope) -> v1::PowerFlowRequest {
    v1::PowerFlowRequest {
        from_unix_ms: T0_MS,
        to_unix_ms: T0_MS + 60_000,
        scope: scope as i32,
    }
}

/// A letter for meter `i`'s reading `seq`, refused for a unit not known
/// then and valid now.
fn stale_unit_letter(i: usize, seq: u64) -> NewDeadLetter {
    NewDeadLetter {
        reading: RawReading {
            device_id: device(i),
            seq,
            ts_ms: T0_MS + seq as i64 * 100,
            metric: "power".to_owned(),
            value: kw(i, seq),
            unit: "kW".to_owned(),
            kind: v1::DeviceKind::ElectricityMeter as i32,
        },
        reason: DeadLetterReason::UnknownUnit,
        detail: "unit \"kW\" was not known then".to_owned(),
        source: "test".to_owned(),
        received_ms: T0_MS,
        key: None,
    }
}

/// Replays the letters `node` holds (scope NODE).
async fn replay_on(node: &TestNode) -> anyhow::Result<v1::ReplayDeadLettersResponse> {
    Ok(node
        .admin()
        .await?
        .replay_dead_letters(v1::ReplayDeadLettersRequest {
            scope: QueryScope::Node as i32,
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// The letters `node` holds that are still pending (scope NODE).
async fn pending_on(node: &TestNode) -> anyhow::Result<v1::ListDeadLettersResponse> {
    Ok(node
        .admin()
        .await?
        .list_dead_letters(v1::ListDeadLettersRequest {
            scope: QueryScope::Node as i32,
            ..Default::default()
        })
        .await?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_answers_for_the_whole_cluster() -> anyhow::Result<()> {
    let cluster = TestCluster::start(&FOUR, |_| {}).await?;
    for seq in 1..=ROUNDS {
        let ack = cluster
            .node("a1")?
            .ingest()
            .await?
            .ingest_batch(round(seq))
            .await?
            .into_inner();
        assert_eq!(ack.accepted, DEVICES as u32, "round {seq}: {ack:?}");
    }
    // Refused readings, sent through two nodes.
    for (via, seq) in [("a1", 1), ("b2", 2), ("b2", 3)] {
        let bad = reading(
            &device(0),
            v1::DeviceKind::ElectricityMeter,
            100 + seq,
            T0_MS,
            "flux",
            1.0,
            "Wb",
        );
        let ack = cluster
            .node(via)?
            .ingest()
            .await?
            .ingest_batch(batch(100 + seq, vec![bad]))
            .await?
            .into_inner();
        assert_eq!(ack.dead_lettered, 1, "{ack:?}");
    }
    cluster.flush().await?;

    // Each node alone holds only the meters it owns...
    let mut meters_per_node = BTreeMap::new();
    for (id, node) in &cluster.nodes {
        let mine = node
            .query()
            .await?
            .power_flow(power_flow(QueryScope::Node))
            .await?
            .into_inner();
        let meters = mine.minutes.first().map_or(0, |m| m.meters);
        meters_per_node.insert(id.clone(), meters);
    }
    assert_eq!(
        meters_per_node.values().sum::<u32>(),
        DEVICES as u32,
        "each meter delivered by one node: {meters_per_node:?}"
    );
    assert!(
        meters_per_node.values().all(|n| *n < DEVICES as u32),
        "placement spreads the meters: {meters_per_node:?}"
    );

    // ...and every node answers for all of them.
    let total = expected_total_kw();
    for (id, node) in &cluster.nodes {
        let mut query = node.query().await?;
        let flow = query
            .power_flow(power_flow(QueryScope::Cluster))
            .await?
            .into_inner();
        assert!(flow.unanswered_nodes.is_empty(), "{id}: {flow:?}");
        let [minute] = flow.minutes.as_slice() else {
            anyhow::bail!("{id}: one minute expected: {flow:?}");
        };
        assert_eq!(minute.minute_unix_ms, T0_MS);
        assert_eq!(minute.meters, DEVICES as u32, "{id}");
        assert!(
            (minute.total_kw - total).abs() < 1e-6,
            "{id}: {} kW, expected {total}",
            minute.total_kw
        );

        for i in [0, DEVICES - 1] {
            let series = query
                .series(v1::SeriesRequest {
                    device_id: device(i),
                    metric: "power".into(),
                    from_unix_ms: T0_MS,
                    to_unix_ms: T0_MS + 60_000,
                    window_minutes: 1,
                    scope: QueryScope::Cluster as i32,
                })
                .await?
                .into_inner();
            let [point] = series.points.as_slice() else {
                anyhow::bail!("{id}: one window for {} expected: {series:?}", device(i));
            };
            assert_eq!(point.count, ROUNDS, "{id}: {}", device(i));
            assert_eq!(point.last, kw(i, ROUNDS), "{id}: {}", device(i));
        }

        let latest = query
            .latest(v1::LatestRequest {
                scope: QueryScope::Cluster as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        let devices: Vec<&str> = latest.values.iter().map(|v| v.device_id.as_str()).collect();
        let all: Vec<String> = (0..DEVICES).map(device).collect();
        assert_eq!(
            devices, all,
            "{id}: one latest power value per meter, in order"
        );
        let limited = query
            .latest(v1::LatestRequest {
                limit: 3,
                scope: QueryScope::Cluster as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(
            limited
                .values
                .iter()
                .map(|v| v.device_id.clone())
                .collect::<Vec<_>>(),
            all[..3],
            "{id}: the limit applies to the merged answer"
        );

        let dead = query
            .dead_letter_counts(v1::DeadLetterCountsRequest {
                scope: QueryScope::Cluster as i32,
            })
            .await?
            .into_inner();
        assert_eq!(dead.total, 3, "{id}: {dead:?}");
    }
    // The dead letters sit on the node that judged the readings.
    let mut dead_per_node = BTreeMap::new();
    for (id, node) in &cluster.nodes {
        let mine = node
            .query()
            .await?
            .dead_letter_counts(v1::DeadLetterCountsRequest {
                scope: QueryScope::Node as i32,
            })
            .await?
            .into_inner();
        dead_per_node.insert(id.clone(), mine.total);
    }
    assert_eq!(dead_per_node.values().sum::<u64>(), 3, "{dead_per_node:?}");
    assert!(
        dead_per_node.values().any(|n| *n == 0),
        "some node holds none, yet answered 3: {dead_per_node:?}"
    );

    // A node that holds none lists and replays every node's letters.
    let (empty, _) = dead_per_node
        .iter()
        .find(|(_, n)| **n == 0)
        .ok_or_else(|| anyhow::anyhow!("no node without letters"))?;
    let mut admin = cluster.node(empty)?.admin().await?;
    let listed = admin
        .list_dead_letters(v1::ListDeadLettersRequest::default())
        .await?
        .into_inner();
    assert!(listed.unanswered_nodes.is_empty(), "{listed:?}");
    assert_eq!(listed.dead_letters.len(), 3, "{listed:?}");
    for letter in &listed.dead_letters {
        assert_eq!(
            dead_per_node.get(&letter.node_id).copied(),
            Some(3),
            "each letter names the node holding it: {letter:?}"
        );
    }
    let limited = admin
        .list_dead_letters(v1::ListDeadLettersRequest {
            limit: 2,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        limited.dead_letters.len(),
        2,
        "the limit applies to the merged list"
    );
    let replayed = admin
        .replay_dead_letters(v1::ReplayDeadLettersRequest::default())
        .await?
        .into_inner();
    assert_eq!(
        (
            replayed.attempted,
            replayed.refused_again,
            replayed.not_owned
        ),
        (3, 3, 0),
        "the holder replayed its letters, still refused (unknown metric): {replayed:?}"
    );
    let only_mine = admin
        .replay_dead_letters(v1::ReplayDeadLettersRequest {
            scope: QueryScope::Node as i32,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(only_mine.attempted, 0, "{only_mine:?}");
    Ok(())
}

/// A letter waits on the node that judged its reading. When its device is
/// owned by another node now, a replay sends the reading to that owner,
/// which validates it again and takes it; the holder marks the letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn letters_of_devices_owned_elsewhere_are_replayed_through_their_owners() -> anyhow::Result<()>
{
    let cluster = TestCluster::start(&FOUR, |_| {}).await?;
    for seq in 1..=ROUNDS {
        cluster
            .node("a1")?
            .ingest()
            .await?
            .ingest_batch(round(seq))
            .await?;
    }
    let holder = cluster.node("a1")?;
    let owned_here = holder
        .query()
        .await?
        .power_flow(power_flow(QueryScope::Node))
        .await?
        .into_inner()
        .minutes
        .first()
        .map_or(0, |m| m.meters);
    assert!(
        (owned_here as usize) < DEVICES,
        "a1 must not own every meter, or nothing goes elsewhere: {owned_here}"
    );
    // One letter per meter on a1, as a1 would have filed them while it
    // owned every meter: the next reading, refused then, valid now.
    let seq = ROUNDS + 1;
    let letters: Vec<NewDeadLetter> = (0..DEVICES).map(|i| stale_unit_letter(i, seq)).collect();
    holder.stores().dead_letters.insert(&letters).await?;

    let replayed = replay_on(holder).await?;
    assert_eq!(
        (
            replayed.attempted,
            replayed.accepted,
            replayed.refused_again,
            replayed.not_owned
        ),
        (DEVICES as u32, DEVICES as u32, 0, 0),
        "every letter replayed, those of meters owned elsewhere through their owners: {replayed:?}"
    );
    cluster.flush().await?;
    let minute = T0_MS - T0_MS.rem_euclid(60_000);
    for i in 0..DEVICES {
        let counts = cluster.power_counts(&device(i), minute).await?;
        assert_eq!(
            counts.values().sum::<u64>(),
            ROUNDS + 1,
            "{}: the replayed reading counted once: {counts:?}",
            device(i)
        );
    }
    let pending = pending_on(holder).await?;
    assert!(pending.dead_letters.is_empty(), "{pending:?}");
    Ok(())
}

/// A replayed letter counts as replayed only once a replica has its step.
/// Here the device's replica took the device over behind its owner's back
/// (a claim the owner never heard of), so it has the owner drop the
/// replay's step: the reading reaches no sink, and its letter stays
/// pending. Before, the letter counted as replayed as soon as the step was
/// logged, and the reading was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_whose_step_is_dropped_leaves_its_letter_pending() -> anyhow::Result<()> {
    let cluster = TestCluster::start(&[("a1", "az-a"), ("b1", "az-b")], |_| {}).await?;
    cluster
        .node("a1")?
        .ingest()
        .await?
        .ingest_batch(round(1))
        .await?;
    let d = vatio_stores::DeviceId::new(device(0));
    let a1_owns = cluster
        .node("a1")?
        .node
        .tree()
        .unowned(vec![d.clone()])
        .await?
        .is_empty();
    let (owner, replica) = if a1_owns { ("a1", "b1") } else { ("b1", "a1") };
    let holder = cluster.node(owner)?;
    holder
        .stores()
        .dead_letters
        .insert(&[stale_unit_letter(0, 2)])
        .await?;

    // The replica claims the device from no one and adopts its own copy.
    let tree = cluster.node(replica)?.node.tree();
    tree.begin_claim(vec![d.clone()]).await?;
    let unheld = vatio_actors::router::HeldState {
        device: d.clone(),
        state: None,
        term: 0,
    };
    assert!(tree.adopt(vec![unheld]).await?.is_empty());

    let replayed = replay_on(holder).await?;
    // Not done: neither accepted nor refused again.
    assert_eq!(
        (replayed.attempted, replayed.accepted),
        (0, 0),
        "{replayed:?}"
    );
    let voided = holder.status().await?.cluster.map(|c| c.steps_voided);
    assert_eq!(voided, Some(1), "the replay's step was dropped");
    let pending = pending_on(holder).await?;
    assert_eq!(pending.dead_letters.len(), 1, "{pending:?}");
    Ok(())
}

/// A node that is down holds its share in its own stores: an answer
/// without it says so, by name, long after the others stopped counting
/// on it (its membership is gone, not just its answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_names_a_member_that_is_down() -> anyhow::Result<()> {
    let mut cluster = TestCluster::start(&FOUR, |_| {}).await?;
    let ack = cluster
        .node("a1")?
        .ingest()
        .await?
        .ingest_batch(round(1))
        .await?
        .into_inner();
    assert_eq!(ack.accepted, DEVICES as u32);
    cluster.flush().await?;
    cluster.stop("b1").await?;
    for id in ["a1", "b2"] {
        cluster
            .node(id)?
            .wait_for_status("b1 is no member any more", |s| {
                s.members.iter().all(|m| m.node_id != "b1")
            })
            .await?;
    }

    let flow = cluster
        .node("a1")?
        .query()
        .await?
        .power_flow(power_flow(QueryScope::Cluster))
        .await?
        .into_inner();
    assert_eq!(flow.unanswered_nodes, ["b1"], "{flow:?}");
    let listed = cluster
        .node("b2")?
        .admin()
        .await?
        .list_dead_letters(v1::ListDeadLettersRequest::default())
        .await?
        .into_inner();
    assert_eq!(listed.unanswered_nodes, ["b1"], "{listed:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_scope_is_refused_by_name() -> anyhow::Result<()> {
    let cluster = TestCluster::start(&FOUR[..2], |_| {}).await?;
    let status = cluster
        .node("a1")?
        .query()
        .await?
        .power_flow(v1::PowerFlowRequest {
            scope: 7,
            ..power_flow(QueryScope::Cluster)
        })
        .await
        .expect_err("scope 7 is no scope");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("scope"), "{status}");
    Ok(())
}
