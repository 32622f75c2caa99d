//! How a node that keeps replicas judges steps an owner sends, before and
//! after another node claims the device: driven directly through the
//! node's actor tree (the Peer service's handle), so each case is exact.
//!
//! - Before any claim, an owner's steps are taken and folded.
//! - A claim answers with the state as folded, and fences the device at an
//!   epoch above every one known here: a step of the old owner's that the
//!   state holds stands (`held`); any other is referred to the claimer, the
//!   only node that can tell whether its line holds it. The claimer's
//!   steps, and those of any later epoch, are taken.
//! - A node that owns the device, or claimed it last, decides: a step its
//!   state holds stands, one it does not is orphaned (the sender must drop
//!   it: the owner went on without it).
//! - A claimer whose log refuses the adoption logs it before anything else
//!   of the device.
//! - An adoption delivers the readings of the claimer's dropped steps that
//!   the adopted copy holds, once, across restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vatio_actors::journal::{StepRecord, encode_state};
use vatio_actors::logic::device::{DeviceState, Op};
use vatio_actors::logic::epoch::Epoch;
use vatio_actors::logic::voided::VoidedStep;
use vatio_actors::router::{HeldState, Presence};
use vatio_actors::void::VoidSet;
use vatio_actors::{ActorTree, TreeOptions};
use vatio_actors::{IncomingStep, Replicated};
use vatio_config::NoOtherAz;
use vatio_proto::v1;
use vatio_stores::{DeviceId, DeviceKind, Metric, RawReading, Reading};
use vatio_tests::{T0_MS, TestNode, test_config};
use vatio_wal::FaultPoint;

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

/// A step its owner logged at `term`, ending at `end` in its log.
fn step(device: &DeviceId, ops: Vec<Op>, end: u64, term: u64) -> anyhow::Result<IncomingStep> {
    let record = StepRecord {
        device: device.clone(),
        term,
        ops,
        letters: Vec::new(),
    };
    Ok(IncomingStep {
        step: record.encode()?,
        end,
        seed: None,
    })
}

/// The device's first step (its reading seq 1), ending at `end` in the
/// log of an owner at `term`.
fn first_step(device: &DeviceId, end: u64, term: u64) -> anyhow::Result<IncomingStep> {
    step(
        device,
        vec![Op::Start { seq: 1 }, Op::Emit(emit(device, 1))],
        end,
        term,
    )
}

/// A copy of `device`'s state that has released seqs 1 to `last`.
fn released_to(device: &DeviceId, last: u64) -> DeviceState {
    let mut copy = DeviceState::new();
    copy.apply(&Op::Start { seq: 1 });
    for seq in 1..=last {
        copy.apply(&Op::Emit(emit(device, seq)));
    }
    copy
}

/// The state and fence term a claim's answer holds for `device`.
fn handed_over(held: Vec<HeldState>, device: &DeviceId) -> anyhow::Result<(DeviceState, u64)> {
    held.into_iter()
        .find(|h| h.device == *device)
        .and_then(|h| h.state.map(|s| (s, h.term)))
        .ok_or_else(|| anyhow::anyhow!("no state handed over for {device}"))
}

/// A claim's outcome where no peer held the device.
fn unheld(device: &DeviceId) -> HeldState {
    HeldState {
        device: device.clone(),
        state: None,
        term: 0,
    }
}

/// Sends steps as their owner's shipper does: again while the node answers
/// `busy` (its device actor is finishing a batch), up to a bounded number of
/// attempts, and returns the first answer that is not busy.
async fn replicate_settled(
    tree: &ActorTree,
    from: &str,
    steps: impl Fn() -> anyhow::Result<Vec<IncomingStep>>,
) -> anyhow::Result<Replicated> {
    for _ in 0..200 {
        let outcome = tree.replicate(from, steps()?).await?;
        if outcome.busy.is_empty() {
            return Ok(outcome);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the node stayed busy for the steps of {from}")
}

/// The configuration of node r1 in az-b, in a cluster of its own.
fn replica_config(dir: &tempfile::TempDir) -> vatio_config::Config {
    let mut cfg = test_config(dir);
    cfg.node.id = "r1".into();
    cfg.node.az = "az-b".into();
    cfg.cluster.gossip_listen = "127.0.0.1:0".into();
    cfg.cluster.gossip_interval = Duration::from_millis(50);
    cfg
}

/// Node r1: it takes replica steps and claims as the tree's handle gives
/// them.
async fn replica_node() -> anyhow::Result<TestNode> {
    let dir = tempfile::tempdir()?;
    let cfg = replica_config(&dir);
    TestNode::start_with(dir, cfg, TreeOptions::default(), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_fences_the_old_owner_and_tells_held_steps_from_orphans() -> anyhow::Result<()> {
    let node = replica_node().await?;
    let tree = node.node.tree();
    let d = DeviceId::new("meter-7");

    // Owner o1 (claimed at term 1) ships steps ending at 100 and 200 in
    // its log: taken.
    let outcome = tree
        .replicate(
            "o1",
            vec![
                first_step(&d, 100, 1)?,
                step(&d, vec![Op::Emit(emit(&d, 2))], 200, 1)?,
            ],
        )
        .await?;
    assert_eq!(outcome, Replicated::default());

    // n1 claims the device: it gets the state as folded, o1's steps in it,
    // fenced at the next term.
    let (state, term) = handed_over(tree.claim("n1", None, vec![d.clone()]).await?, &d)?;
    assert_eq!((state.next_seq(), state.held_from("o1")), (3, 200));
    assert_eq!((term, state.epoch().clone()), (2, Epoch::of(2, "n1")));

    // o1's steps are no longer taken here: the one the state holds stands,
    // only n1 can tell whether its line holds the other.
    let resend = || -> anyhow::Result<Vec<IncomingStep>> {
        Ok(vec![
            step(&d, vec![Op::Emit(emit(&d, 2))], 200, 1)?,
            step(&d, vec![Op::Emit(emit(&d, 3))], 300, 1)?,
        ])
    };
    let outcome = tree.replicate("o1", resend()?).await?;
    let n1: Arc<str> = Arc::from("n1");
    assert_eq!(outcome.fenced, [(300, n1)]);
    assert!(outcome.orphaned.is_empty());

    // The claimer's steps are taken; its first one brings its line (a seed).
    let mut seed = state.clone();
    seed.apply(&Op::Emit(emit(&d, 3)));
    seed.note_step("n1", 40);
    let mut first = step(&d, vec![Op::Emit(emit(&d, 3))], 40, 2)?;
    first.seed = Some(encode_state(&seed)?.into());
    let outcome = tree.replicate("n1", vec![first]).await?;
    assert_eq!(outcome, Replicated::default());

    // Once this node owns the device, it decides: the step its state holds
    // stands, the one it does not hold is orphaned.
    tree.begin_claim(vec![d.clone()]).await?;
    assert!(tree.adopt(vec![unheld(&d)]).await?.is_empty());
    let outcome = tree.replicate("o1", resend()?).await?;
    assert_eq!((outcome.orphaned, outcome.fenced.len()), (vec![300], 0));
    let (state, term) = handed_over(tree.claim("x1", None, vec![d.clone()]).await?, &d)?;
    assert_eq!((state.next_seq(), state.held_from("n1")), (4, 40));
    // r1 adopted at term 3, so x1 gets term 4.
    assert_eq!(term, 4);

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

    let outcome = tree.replicate("o1", vec![first_step(&d, 100, 1)?]).await?;
    assert_eq!(outcome, Replicated::default());

    // o1 dies; this node takes the device over with the copy it holds.
    tree.begin_claim(vec![d.clone()]).await?;
    assert!(tree.adopt(vec![unheld(&d)]).await?.is_empty());
    let late = || step(&d, vec![Op::Emit(emit(&d, 2))], 200, 1);
    let outcome = tree.replicate("o1", vec![late()?]).await?;
    assert_eq!(outcome.orphaned, [200]);

    // o1 is back and placement hands the device back to it: this node is
    // no longer the owner, and o1 sends its unsettled step again.
    tree.disown(Box::new(|_| false), Box::new(|_| Presence::Member))?;
    let outcome = replicate_settled(tree, "o1", || Ok(vec![late()?])).await?;
    assert_eq!(outcome.orphaned, [200]);

    node.node.shutdown().await?;
    Ok(())
}

/// The owner this node claimed a device from, unreachable at the claim,
/// sends a step its line took meanwhile, with a seed as to a new replica:
/// the step is from an epoch before this node's claim and is orphaned, not
/// taken (taking it put its readings on two lines, and in two archives).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_step_from_before_this_nodes_claim_is_orphaned() -> anyhow::Result<()> {
    let node = replica_node().await?;
    let tree = node.node.tree();
    let d = DeviceId::new("meter-11");

    let first = first_step(&d, 100, 1)?;
    assert_eq!(
        tree.replicate("b2", vec![first]).await?,
        Replicated::default()
    );

    // b2 is out of reach: this node claims the device without it, then
    // placement moves the device on again.
    tree.begin_claim(vec![d.clone()]).await?;
    assert!(tree.adopt(vec![unheld(&d)]).await?.is_empty());
    tree.disown(Box::new(|_| false), Box::new(|_| Presence::Member))?;

    // b2 never heard of the claim and ships its next step with a seed.
    let mut seed = DeviceState::new();
    seed.apply(&Op::Start { seq: 1 });
    seed.apply(&Op::Emit(emit(&d, 1)));
    seed.apply(&Op::Emit(emit(&d, 2)));
    seed.note_step("b2", 200);
    let seed = encode_state(&seed)?;
    let late = || -> anyhow::Result<Vec<IncomingStep>> {
        let mut late = step(&d, vec![Op::Emit(emit(&d, 2))], 200, 1)?;
        late.seed = Some(seed.clone().into());
        Ok(vec![late])
    };
    let outcome = replicate_settled(tree, "b2", late).await?;
    assert_eq!(outcome.orphaned, [200]);

    node.node.shutdown().await?;
    Ok(())
}

/// An owner that receives a step of a later epoch than its own (a claim
/// it never heard of) stops sequencing the device: it answers busy once,
/// then takes the later owner's steps as a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_steps_down_for_a_later_epoch() -> anyhow::Result<()> {
    let node = replica_node().await?;
    let tree = node.node.tree();
    let d = DeviceId::new("meter-12");

    tree.begin_claim(vec![d.clone()]).await?;
    assert!(tree.adopt(vec![unheld(&d)]).await?.is_empty());
    assert!(tree.unowned(vec![d.clone()]).await?.is_empty());

    // n1 claimed at term 5 without reaching this node.
    let later = || first_step(&d, 70, 5);
    let outcome = tree.replicate("n1", vec![later()?]).await?;
    assert_eq!(outcome.busy, [70]);
    assert_eq!(
        tree.unowned(vec![d.clone()]).await?,
        std::slice::from_ref(&d)
    );
    // Its device actor stops with the step down (once its batch is done):
    // the step is taken then.
    let outcome = replicate_settled(tree, "n1", || Ok(vec![later()?])).await?;
    assert_eq!(outcome, Replicated::default());

    node.node.shutdown().await?;
    Ok(())
}

/// A step of an earlier epoch is referred to the later epoch's claimer
/// while it is a member; while this node cannot tell whether the claimer
/// is alive, the step waits; once it has left, this node's copy decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_is_referred_only_to_a_claimer_that_is_a_member() -> anyhow::Result<()> {
    let node = replica_node().await?;
    let tree = node.node.tree();
    let d = DeviceId::new("meter-13");

    let first = first_step(&d, 100, 1)?;
    assert_eq!(
        tree.replicate("o1", vec![first]).await?,
        Replicated::default()
    );
    tree.claim("n1", None, vec![d.clone()]).await?;
    let late = || step(&d, vec![Op::Emit(emit(&d, 2))], 200, 1);
    let n1: Arc<str> = Arc::from("n1");
    assert_eq!(
        tree.replicate("o1", vec![late()?]).await?.fenced,
        [(200, n1)]
    );

    let n1_is = |presence: Presence| -> Box<dyn Fn(&str) -> Presence + Send> {
        Box::new(move |node| {
            if node == "n1" {
                presence
            } else {
                Presence::Member
            }
        })
    };
    // The claim on this node is lifted only when n1 has left: an unknown
    // n1 (this node restarted, say) keeps it, and the step is referred.
    tree.disown(Box::new(|_| false), n1_is(Presence::Unknown))?;
    let n1: Arc<str> = Arc::from("n1");
    assert_eq!(
        tree.replicate("o1", vec![late()?]).await?.fenced,
        [(200, n1)]
    );
    tree.disown(Box::new(|_| false), n1_is(Presence::Left))?;
    assert_eq!(tree.replicate("o1", vec![late()?]).await?.orphaned, [200]);
    // Learning of n1 again, this node defers (n1's line may hold the
    // step): the lifted claim stays lifted, but nothing final is decided.
    tree.disown(Box::new(|_| false), n1_is(Presence::Unknown))?;
    let other = || step(&d, vec![Op::Emit(emit(&d, 3))], 300, 1);
    assert_eq!(tree.replicate("o1", vec![other()?]).await?.busy, [300]);

    node.node.shutdown().await?;
    Ok(())
}

/// An owner whose log lost its tail (a cut at start-up) claims its device
/// back and logs new steps at log ends its lost steps had: they are new
/// steps of a later epoch, folded, not taken for the lost ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_at_ends_an_owner_reused_after_losing_its_tail_are_folded() -> anyhow::Result<()> {
    let node = replica_node().await?;
    let tree = node.node.tree();
    let d = DeviceId::new("meter-14");

    let first = vec![
        first_step(&d, 100, 1)?,
        step(&d, vec![Op::Emit(emit(&d, 2))], 200, 1)?,
    ];
    assert_eq!(tree.replicate("o1", first).await?, Replicated::default());

    // o1 restarts with its log cut at 120 and claims the device back. It
    // is the latest claimer already: its epoch stays (it adopts above it).
    let (state, term) = handed_over(tree.claim("o1", Some(120), vec![d.clone()]).await?, &d)?;
    assert_eq!((state.next_seq(), term), (3, 1));
    // Its step before the cut, sent again, stands.
    let kept = first_step(&d, 100, 1)?;
    assert_eq!(
        tree.replicate("o1", vec![kept]).await?,
        Replicated::default()
    );
    let reused = step(&d, vec![Op::Emit(emit(&d, 3))], 150, 2)?;
    assert_eq!(
        tree.replicate("o1", vec![reused]).await?,
        Replicated::default()
    );

    let (state, _) = handed_over(tree.claim("x1", None, vec![d.clone()]).await?, &d)?;
    assert_eq!(state.next_seq(), 4);

    node.node.shutdown().await?;
    Ok(())
}

/// Reading `seq` of meter `device` as a client sends it.
fn raw(device: &DeviceId, seq: u64) -> RawReading {
    RawReading {
        device_id: device.to_string(),
        seq,
        ts_ms: T0_MS + seq as i64,
        metric: "power".to_owned(),
        value: 5.0,
        unit: "kW".to_owned(),
        kind: v1::DeviceKind::ElectricityMeter as i32,
    }
}

/// A claimer whose log refuses the step adopting the cluster's copy logs
/// it before anything else of the device: groups fail while the log does,
/// and afterwards the adopted copy decides, so a reading it holds is a
/// duplicate. Before, the device went on from its own copy and took that
/// reading again (the simulation's seed 182 delivered two readings twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adoption_the_log_refused_comes_before_the_next_group() -> anyhow::Result<()> {
    let failing = Arc::new(AtomicBool::new(false));
    let dir = tempfile::tempdir()?;
    let mut cfg = replica_config(&dir);
    // Alone in the cluster: acks without a replica.
    cfg.cluster.no_other_az = NoOtherAz::Degrade;
    // FAULT INJECTION: the log's writes fail while `failing` is set.
    let hook: vatio_wal::FaultHook = {
        let failing = failing.clone();
        Arc::new(move |_point: FaultPoint| {
            failing
                .load(Ordering::Relaxed)
                .then(|| std::io::Error::other("test disk error"))
        })
    };
    let node = TestNode::start_full(dir, cfg, TreeOptions::default(), None, Some(hook)).await?;
    let tree = node.node.tree();
    let d = DeviceId::new("meter-15");

    // The cluster's copy of the meter has released seqs 1 and 2.
    let copy = released_to(&d, 2);
    assert_eq!(copy.next_seq(), 3);
    tree.begin_claim(vec![d.clone()]).await?;
    failing.store(true, Ordering::Relaxed);
    let held = HeldState {
        device: d.clone(),
        state: Some(copy),
        term: 1,
    };
    assert!(tree.adopt(vec![held]).await?.is_empty());
    assert!(
        tree.ingest(vec![raw(&d, 2)], "test").await.is_err(),
        "nothing is taken while the adoption is not in the log"
    );

    failing.store(false, Ordering::Relaxed);
    let ack = tree.ingest(vec![raw(&d, 2), raw(&d, 3)], "test").await?;
    assert_eq!(
        (ack.accepted, ack.duplicates),
        (1, 1),
        "seq 2 is the adopted copy's, seq 3 is new"
    );

    node.node.shutdown().await?;
    Ok(())
}

/// Claims `d` on `node` and adopts `copy` as the peers' answer at `term`.
async fn claim_with(
    node: &TestNode,
    d: &DeviceId,
    copy: &DeviceState,
    term: u64,
) -> anyhow::Result<()> {
    let tree = node.node.tree();
    tree.begin_claim(vec![d.clone()]).await?;
    let held = HeldState {
        device: d.clone(),
        state: Some(copy.clone()),
        term,
    };
    anyhow::ensure!(
        tree.adopt(vec![held]).await?.is_empty(),
        "the claim was taken over"
    );
    Ok(())
}

/// A node dropped one of its steps (a replica answered `orphaned`) and
/// stopped before it claimed the device again. The copy its next claim
/// adopts holds the step after all (another replica had taken it), so the
/// line counts the step's readings as released: the adoption delivers
/// them, from the void set that kept them across the restart. Once that
/// adoption is logged the void set forgets them, and a later claim of the
/// same copy delivers nothing a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_steps_readings_survive_a_restart_until_an_adoption_delivers_them()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = replica_config(&dir);
    // Alone in the cluster: steps reach the sinks without a replica.
    cfg.cluster.no_other_az = NoOtherAz::Degrade;
    let void_path = cfg.data_path(&cfg.log.dir).join("void");
    let d = DeviceId::new("meter-21");

    // r1's step at 700 released seqs 1 and 2 and was dropped.
    let dropped = VoidedStep {
        end: 700,
        released: vec![emit(&d, 1), emit(&d, 2)],
    };
    std::fs::create_dir_all(
        void_path
            .parent()
            .ok_or_else(|| anyhow::anyhow!("no log dir"))?,
    )?;
    VoidSet::open(&void_path)?.add_steps(&[(d.clone(), dropped)])?;

    // The copy another replica kept: it took that step.
    let mut copy = released_to(&d, 2);
    copy.note_step("r1", 700);

    let node = TestNode::start_with(dir, cfg, TreeOptions::default(), None).await?;
    claim_with(&node, &d, &copy, 1).await?;
    let status = node
        .wait_for_status("the adoption delivered the dropped step's readings", |s| {
            s.cluster
                .as_ref()
                .is_some_and(|c| c.dropped_readings_delivered == 2)
        })
        .await?;
    assert_eq!(status.cluster.map(|c| c.steps_voided), Some(0));
    node.flush().await?;
    let minute = T0_MS - T0_MS.rem_euclid(60_000);
    assert_eq!(node.power_point(d.as_str(), minute).await?.stats.count, 2);
    // Forgotten once the adoption is logged (polled: the router settles
    // the void set when the device actor reports the step).
    let mut settled = false;
    for _ in 0..500 {
        if VoidSet::open(&void_path)?.steps().is_empty() {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(settled, "the void set still keeps the delivered readings");

    let TestNode { node, dir, cfg, .. } = node;
    node.shutdown().await?;
    let node = TestNode::start_with(dir, cfg, TreeOptions::default(), None).await?;
    claim_with(&node, &d, &copy, 2).await?;
    node.flush().await?;
    let status = node.status().await?;
    assert_eq!(
        status.cluster.map(|c| c.dropped_readings_delivered),
        Some(0)
    );
    assert_eq!(
        node.power_point(d.as_str(), minute).await?.stats.count,
        2,
        "the readings reached the sinks once"
    );
    node.node.shutdown().await?;
    Ok(())
}

/// This node kept a replica copy of o1's line that got to seq 3; o2 had
/// claimed the device meanwhile (a claim this node never answered) from
/// the state at seq 1 and went on to seq 2. Claiming the device, this node
/// adopts o2's copy, the later line, though its own got further: o1's step
/// that released seq 3 came after o2's claim and is not the device's, so
/// seq 3 is taken anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_adopts_the_latest_line_over_a_more_advanced_earlier_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = replica_config(&dir);
    // Alone in the cluster: acks without a replica.
    cfg.cluster.no_other_az = NoOtherAz::Degrade;
    let node = TestNode::start_with(dir, cfg, TreeOptions::default(), None).await?;
    let tree = node.node.tree();
    let d = DeviceId::new("meter-23");

    let steps = vec![
        first_step(&d, 100, 1)?,
        step(&d, vec![Op::Emit(emit(&d, 2))], 200, 1)?,
        step(&d, vec![Op::Emit(emit(&d, 3))], 300, 1)?,
    ];
    assert_eq!(tree.replicate("o1", steps).await?, Replicated::default());

    let mut line = released_to(&d, 2);
    line.took_step("o1", 100, 1);
    line.took_step("o2", 40, 2);
    claim_with(&node, &d, &line, 2).await?;

    let ack = tree.ingest(vec![raw(&d, 2), raw(&d, 3)], "test").await?;
    assert_eq!(
        (ack.accepted, ack.duplicates),
        (1, 1),
        "seq 2 is on o2's line, seq 3 is not"
    );
    node.node.shutdown().await?;
    Ok(())
}
