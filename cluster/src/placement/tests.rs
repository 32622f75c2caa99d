//! Tests of device placement: every node agrees, the replica is in another AZ,
//! only live members are chosen, membership changes move only the devices they
//! must, load is balanced, and the score itself never changes by accident.
//!
//! Member sets and device ids come from seeded generators, so every run checks
//! the same cases.

use std::collections::HashMap;
use std::net::SocketAddr;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::*;

fn member(id: &str, az: &str, ready: bool) -> Member {
    Member {
        id: NodeId::from(id),
        az: Az::from(az),
        addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
        ready,
    }
}

/// The demo's shape: two live nodes in each of two AZs.
fn four_members() -> Vec<Member> {
    vec![
        member("node-a1", "az-a", true),
        member("node-a2", "az-a", true),
        member("node-b1", "az-b", true),
        member("node-b2", "az-b", true),
    ]
}

/// Ids shaped like the simulated factory's: a kind and a counter.
fn sequential_devices(count: usize) -> Vec<DeviceId> {
    let kinds = ["climate", "arm", "meter"];
    (0..count)
        .map(|i| DeviceId::new(format!("{}-{i:05}", kinds[i % kinds.len()])))
        .collect()
}

/// Ids of random length and content, non-ASCII included.
fn random_devices(count: usize, seed: u64) -> Vec<DeviceId> {
    let alphabet: Vec<char> = "abcdefghijklmnopqrstuvwxyz0123456789-_.:/éü温度"
        .chars()
        .collect();
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let len = rng.random_range(1..=24);
            let id: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            DeviceId::new(id)
        })
        .collect()
}

/// 1 to 8 members over 1 to 3 AZs, each ready with probability 3/4.
fn random_members(rng: &mut SmallRng) -> Vec<Member> {
    let count = rng.random_range(1..=8);
    let azs = rng.random_range(1..=3);
    (0..count)
        .map(|i| {
            let az = format!("az-{}", rng.random_range(0..azs));
            let ready = rng.random_range(0..4) != 0;
            member(&format!("node-{i}"), &az, ready)
        })
        .collect()
}

fn place(view: &View, device: &DeviceId) -> Placement {
    view.place(device).expect("the view has a live member")
}

fn owners(view: &View, devices: &[DeviceId]) -> Vec<NodeId> {
    devices.iter().map(|d| place(view, d).owner).collect()
}

fn owner_shares(view: &View, devices: &[DeviceId]) -> HashMap<NodeId, f64> {
    let mut counts: HashMap<NodeId, usize> = HashMap::new();
    for owner in owners(view, devices) {
        *counts.entry(owner).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(id, n)| (id, n as f64 / devices.len() as f64))
        .collect()
}

fn without(members: &[Member], id: &str) -> Vec<Member> {
    members
        .iter()
        .filter(|m| m.id.as_str() != id)
        .cloned()
        .collect()
}

#[test]
fn same_members_in_any_order_place_every_device_alike() {
    let devices = random_devices(10_000, 1);
    let mut rng = SmallRng::seed_from_u64(2);
    let mut member_sets = vec![four_members()];
    member_sets.extend((0..8).map(|_| random_members(&mut rng)));
    for members in member_sets {
        let reference = View::new(members.clone());
        let expected: Vec<Option<Placement>> = devices.iter().map(|d| reference.place(d)).collect();
        let mut reversed = members.clone();
        reversed.reverse();
        let mut orders = vec![reversed];
        for _ in 0..4 {
            let mut shuffled = members.clone();
            shuffled.shuffle(&mut rng);
            orders.push(shuffled);
        }
        for order in orders {
            let view: View = order.into_iter().collect();
            assert_eq!(view, reference);
            let placed: Vec<Option<Placement>> = devices.iter().map(|d| view.place(d)).collect();
            assert!(placed == expected, "placements differ for {members:?}");
        }
    }
}

#[test]
fn replica_is_the_best_live_member_outside_the_owners_az() {
    let mut rng = SmallRng::seed_from_u64(3);
    let devices = random_devices(300, 4);
    for _ in 0..300 {
        let view = View::new(random_members(&mut rng));
        for device in &devices {
            let Some(placement) = view.place(device) else {
                assert_eq!(view.live().count(), 0);
                continue;
            };
            let owner = view.member(&placement.owner).expect("owner is a member");
            let other_az_live = view.live().any(|m| m.az != owner.az);
            // The definition, checked against the single pass of `place`.
            let best_elsewhere = view
                .ranking(device)
                .into_iter()
                .find(|m| m.az != owner.az)
                .map(|m| m.id.clone());
            assert_eq!(placement.replica, best_elsewhere, "{device} in {view:?}");
            match &placement.replica {
                Some(replica_id) => {
                    let replica = view.member(replica_id).expect("replica is a member");
                    assert_ne!(replica.az, owner.az);
                    assert_ne!(replica.id, owner.id);
                    assert!(replica.ready);
                    assert!(!placement.replica_missing());
                }
                None => {
                    assert!(!other_az_live, "{device} lacks a replica in {view:?}");
                    assert!(placement.replica_missing());
                }
            }
        }
    }
}

#[test]
fn replica_is_missing_when_no_other_az_has_a_live_member() {
    let devices = random_devices(2_000, 5);
    let one_az = View::new([
        member("node-a1", "az-a", true),
        member("node-a2", "az-a", true),
    ]);
    let other_az_down = View::new([
        member("node-a1", "az-a", true),
        member("node-a2", "az-a", true),
        member("node-b1", "az-b", false),
        member("node-b2", "az-b", false),
    ]);
    for view in [one_az, other_az_down] {
        for device in &devices {
            let placement = place(&view, device);
            assert_eq!(placement.replica, None);
            assert!(placement.replica_missing());
            assert_eq!(
                view.member(&placement.owner).map(|m| m.az.as_str()),
                Some("az-a")
            );
        }
    }
}

#[test]
fn members_that_are_not_ready_are_never_chosen() {
    let mut rng = SmallRng::seed_from_u64(6);
    let devices = random_devices(300, 7);
    for _ in 0..300 {
        let view = View::new(random_members(&mut rng));
        let not_ready: Vec<&NodeId> = view
            .members()
            .iter()
            .filter(|m| !m.ready)
            .map(|m| &m.id)
            .collect();
        for device in &devices {
            let ranking = view.ranking(device);
            assert_eq!(ranking.len(), view.live().count());
            assert!(ranking.iter().all(|m| m.ready));
            if let Some(placement) = view.place(device) {
                assert!(!not_ready.contains(&&placement.owner));
                if let Some(replica) = &placement.replica {
                    assert!(!not_ready.contains(&replica));
                }
            }
        }
    }
}

#[test]
fn a_view_without_live_members_places_nothing() {
    let device = DeviceId::new("meter-01");
    let all_down = View::new([
        member("node-a1", "az-a", false),
        member("node-b1", "az-b", false),
    ]);
    for view in [View::default(), all_down] {
        assert_eq!(view.place(&device), None);
        assert!(view.ranking(&device).is_empty());
    }
}

#[test]
fn removing_a_member_moves_only_its_devices_each_to_its_next_in_ranking() {
    let members = four_members();
    let devices = sequential_devices(20_000);
    let before = View::new(members.clone());
    for gone in ["node-a1", "node-a2", "node-b1", "node-b2"] {
        let after = View::new(without(&members, gone));
        let mut moved = 0;
        for device in &devices {
            let ranking_before = before.ranking(device);
            let old_owner = &ranking_before[0].id;
            let new_owner = place(&after, device).owner;
            if old_owner.as_str() == gone {
                assert_eq!(new_owner, ranking_before[1].id, "{device}");
                moved += 1;
            } else {
                assert_eq!(
                    &new_owner, old_owner,
                    "{device} moved though {gone} did not own it"
                );
            }
            // The survivors keep their order: failover follows the ranking.
            let expected: Vec<&NodeId> = ranking_before
                .iter()
                .map(|m| &m.id)
                .filter(|id| id.as_str() != gone)
                .collect();
            let ranking_after: Vec<&NodeId> = after.ranking(device).iter().map(|m| &m.id).collect();
            assert_eq!(ranking_after, expected);
        }
        assert!(moved > 0, "{gone} owned no device");
    }
}

#[test]
fn adding_a_member_moves_only_the_devices_it_takes_about_a_fifth() {
    let members = four_members();
    let devices = sequential_devices(20_000);
    let before = View::new(members.clone());
    let newcomer = member("node-a3", "az-a", true);
    let after = View::new(members.into_iter().chain([newcomer.clone()]));
    let mut taken = 0;
    for (device, (old, new)) in devices.iter().zip(
        owners(&before, &devices)
            .into_iter()
            .zip(owners(&after, &devices)),
    ) {
        if old != new {
            assert_eq!(new, newcomer.id, "{device} moved from {old} to {new}");
            taken += 1;
        }
    }
    let share = taken as f64 / devices.len() as f64;
    assert!(
        (0.15..0.25).contains(&share),
        "the newcomer took {share:.3}"
    );
}

#[test]
fn four_live_members_each_own_and_replicate_a_fair_share() {
    let view = View::new(four_members());
    for devices in [sequential_devices(20_000), random_devices(20_000, 8)] {
        let shares = owner_shares(&view, &devices);
        assert_eq!(shares.len(), 4);
        for (id, share) in &shares {
            assert!((0.20..0.30).contains(share), "{id} owns {share:.3}");
        }
        let mut replicas: HashMap<NodeId, usize> = HashMap::new();
        for device in &devices {
            let replica = place(&view, device).replica.expect("both AZs are live");
            *replicas.entry(replica).or_default() += 1;
        }
        for (id, n) in &replicas {
            let share = *n as f64 / devices.len() as f64;
            assert!((0.20..0.30).contains(&share), "{id} replicates {share:.3}");
        }
    }
}

#[test]
fn duplicate_ids_keep_the_last_member_given() {
    let view = View::new([
        member("node-a1", "az-a", true),
        member("node-b1", "az-b", true),
        member("node-a1", "az-c", false),
    ]);
    assert_eq!(view.members().len(), 2);
    let a1 = view
        .member(&NodeId::from("node-a1"))
        .expect("node-a1 is a member");
    assert_eq!(a1.az, Az::from("az-c"));
    assert!(!a1.ready);
}

#[test]
fn ranking_starts_with_the_owner_and_descends_by_score() {
    let mut rng = SmallRng::seed_from_u64(9);
    let devices = random_devices(200, 10);
    for _ in 0..100 {
        let view = View::new(random_members(&mut rng));
        for device in &devices {
            let ranking = view.ranking(device);
            match view.place(device) {
                Some(placement) => assert_eq!(ranking[0].id, placement.owner),
                None => assert!(ranking.is_empty()),
            }
            let scores: Vec<u64> = ranking.iter().map(|m| score(&m.id, device)).collect();
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        }
    }
}

#[test]
fn equal_scores_rank_the_smaller_node_id_first() {
    let a = member("node-a", "az-a", true);
    let b = member("node-b", "az-b", true);
    let scored = |member| Scored { score: 42, member };
    assert!(scored(&a) > scored(&b));
    assert!(
        Scored {
            score: 43,
            member: &b
        } > scored(&a)
    );
}

#[test]
fn score_is_xxh64_of_the_length_prefixed_ids() {
    let nodes = ["", "node-a1", "a", "ab"];
    let devices = ["", "meter-01", "c", "bc", "温度-7"];
    for node in nodes {
        for device in devices {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&(node.len() as u64).to_le_bytes());
            bytes.extend_from_slice(node.as_bytes());
            bytes.extend_from_slice(&(device.len() as u64).to_le_bytes());
            bytes.extend_from_slice(device.as_bytes());
            assert_eq!(
                score(&NodeId::from(node), &DeviceId::new(device)),
                XxHash64::oneshot(0, &bytes),
                "{node:?} {device:?}"
            );
        }
    }
    // The split between the two ids is part of what is hashed.
    assert_ne!(
        score(&NodeId::from("ab"), &DeviceId::new("c")),
        score(&NodeId::from("a"), &DeviceId::new("bc"))
    );
}

/// Changing any value here means the score changed, and that moves nearly every
/// device in every deployed cluster to another node. Do not update these to
/// make the test pass: restore the score instead. (The values were also checked
/// against the reference C implementation of XXH64.)
#[test]
fn placement_of_a_fixed_view_never_changes() {
    let pinned_scores = [
        ("node-a1", "meter-01", 0xd15d_9a9d_8a70_3922_u64),
        ("node-b2", "arm-007", 0xf765_25c6_30e6_6719_u64),
    ];
    for (node, device, expected) in pinned_scores {
        let actual = score(&NodeId::from(node), &DeviceId::new(device));
        assert_eq!(actual, expected, "score of {node} for {device}");
    }
    let view = View::new(four_members());
    // (device, owner, replica)
    let pinned = [
        ("climate-000", "node-a1", "node-b1"),
        ("climate-001", "node-b2", "node-a1"),
        ("arm-000", "node-b1", "node-a2"),
        ("arm-007", "node-b2", "node-a1"),
        ("meter-01", "node-a1", "node-b2"),
        ("meter-12", "node-b1", "node-a1"),
        ("温度-7", "node-a2", "node-b1"),
        ("", "node-a1", "node-b1"),
    ];
    for (device, owner, replica) in pinned {
        let placement = place(&view, &DeviceId::new(device));
        assert_eq!(placement.owner.as_str(), owner, "owner of {device:?}");
        let actual_replica = placement.replica.as_ref().map(NodeId::as_str);
        assert_eq!(actual_replica, Some(replica), "replica of {device:?}");
    }
}
