//! How a node that keeps replicas judges steps an owner sends, before and
//! after another node claims the device: driven directly through the
//! node's actor tree (the Peer service's handle), so each case is exact.
//!
//! - Before any claim, an owner's steps are taken and folded.
//! - A claim answers with the state as folded, and fences the device: the
//!   old owner's steps are referred to the claimer, the only node that can
//!   tell whether its line holds them; the claimer's steps are taken.
//! - A node that owns the device decides: a step its state holds stands
//!   (`held`, the sender keeps it), one it does not is orphaned (the
//!   sender must drop it: the owner went on without it).

use std::time::Duration;

use std::sync::Arc;

use vatio_actors::TreeOptions;
use vatio_actors::journal::{StepRecord, encode_state};
use vatio_actors::logic::device::Op;
use vatio_actors::{IncomingStep, Replicated};
use vatio_stores::{DeviceId, DeviceKind, Metric, Reading};
use vatio_tests::{T0_MS, TestNode, test_config};

fn emit(device: &DeviceId, seq: u64) -> Reading {
    Reading {
        device: device.clone(),
        kind: DeviceKind::ElectricityMeter,
        seq,
        ts_ms: T0_MS + seq as i64,
        metric: Metric::Power,
        value: 5.0,
    }
}

fn step(device: &DeviceId, ops: Vec<Op>, end: u64) -> anyhow::Result<IncomingStep> {
    let record = StepRecord {
        device: device.clone(),
        ops,
        letters: Vec::new(),
    };
    Ok(IncomingStep {
        step: record.encode()?,
        end,
        seed: None,
    })
}

/// Node r1 in az-b, in a cluster of its own: it takes replica steps and
/// claims as the tree's handle gives them.
async fn replica_node() -> anyhow::Result<TestNode> {
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(&dir);
    cfg.node.id = "r1".into();
    cfg.node.az = "az-b".into();
    cfg.cluster.gossip_listen = "127.0.0.1:0".into();
    cfg.cluster.gossip_interval = Duration::from_millis(50);
    TestNode::start_with(dir, cfg, TreeOptions::default(), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_fences_the_old_owner_and_tells_held_steps_from_orphans() -> anyhow::Result<()> {
    let node = replica_node().await?;
    let tree = node.node.tree();
    let d = DeviceId::new("meter-7");

    // Owner o1 ships steps ending at 100 and 200 in its log: taken.
    let outcome = tree
        .replicate(
            "o1",
            vec![
                step(&d, vec![Op::Start { seq: 1 }, Op::Emit(emit(&d, 1))], 100)?,
                step(&d, vec![Op::Emit(emit(&d, 2))], 200)?,
            ],
        )
        .await?;
    assert_eq!(outcome, Replicated::default());

    // n1 claims the device: it gets the state as folded, o1's steps in it.
    let held = tree.claim("n1", vec![d.clone()]).await?;
    let state = held
        .into_iter()
        .find_map(|(device, s)| (device == d).then_some(s).flatten())
        .ok_or_else(|| anyhow::anyhow!("no state handed over for {d}"))?;
    assert_eq!((state.next_seq(), state.held_from("o1")), (3, 200));

    // o1's steps are no longer taken here; only n1 can tell which stand.
    let resend = || -> anyhow::Result<Vec<IncomingStep>> {
        Ok(vec![
            step(&d, vec![Op::Emit(emit(&d, 2))], 200)?,
            step(&d, vec![Op::Emit(emit(&d, 3))], 300)?,
        ])
    };
    let outcome = tree.replicate("o1", resend()?).await?;
    let n1: Arc<str> = Arc::from("n1");
    assert_eq!(outcome.fenced, [(200, n1.clone()), (300, n1)]);
    assert!(outcome.orphaned.is_empty());

    // The claimer's steps are taken; its first one brings its line (a seed).
    let mut seed = state.clone();
    seed.apply(&Op::Emit(emit(&d, 3)));
    seed.note_step("n1", 40);
    let mut first = step(&d, vec![Op::Emit(emit(&d, 3))], 40)?;
    first.seed = Some(encode_state(&seed)?.into());
    let outcome = tree.replicate("n1", vec![first]).await?;
    assert_eq!(outcome, Replicated::default());

    // Once this node owns the device, it decides: the step its state holds
    // stands, the one it does not hold is orphaned.
    tree.begin_claim(vec![d.clone()]).await?;
    assert!(tree.adopt(vec![(d.clone(), None)]).await?.is_empty());
    let outcome = tree.replicate("o1", resend()?).await?;
    assert_eq!((outcome.orphaned, outcome.fenced.len()), (vec![300], 0));
    let held = tree.claim("x1", vec![d.clone()]).await?;
    let state = held
        .into_iter()
        .find_map(|(device, s)| (device == d).then_some(s).flatten())
        .ok_or_else(|| anyhow::anyhow!("no state for {d}"))?;
    assert_eq!((state.next_seq(), state.held_from("n1")), (4, 40));

    node.node.shutdown().await?;
    Ok(())
}

/// A node that took a device over and then lost it to placement keeps its
/// verdict on a former owner's step its line does not hold: the step stays
/// orphaned, whoever asks and however often.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphaned_step_stays_orphaned_after_the_device_moves_on() -> anyhow::Result<()> {
    let node = replica_node().await?;
    let tree = node.node.tree();
    let d = DeviceId::new("meter-9");

    let outcome = tree
        .replicate(
            "o1",
            vec![step(
                &d,
                vec![Op::Start { seq: 1 }, Op::Emit(emit(&d, 1))],
                100,
            )?],
        )
        .await?;
    assert_eq!(outcome, Replicated::default());

    // o1 dies; this node takes the device over with the copy it holds.
    tree.begin_claim(vec![d.clone()]).await?;
    assert!(tree.adopt(vec![(d.clone(), None)]).await?.is_empty());
    let late = || step(&d, vec![Op::Emit(emit(&d, 2))], 200);
    let outcome = tree.replicate("o1", vec![late()?]).await?;
    assert_eq!(outcome.orphaned, [200]);

    // o1 is back and placement hands the device back to it: this node is
    // no longer the owner, and o1 sends its unsettled step again.
    tree.disown(Box::new(|_| false), Box::new(|_| true))?;
    let outcome = tree.replicate("o1", vec![late()?]).await?;
    assert_eq!(outcome.orphaned, [200]);

    node.node.shutdown().await?;
    Ok(())
}
