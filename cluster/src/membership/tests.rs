//! Membership over real UDP on loopback: members find each other from one
//! seed, agree on the view, see readiness changes, drop a dead member and take
//! back a restarted one. Every wait polls the view with a deadline.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::watch;
use vatio_stores::DeviceId;

use super::*;
use crate::placement::Member;

/// Convergence and readiness take a few gossip rounds; the deadline is
/// generous for a loaded machine.
const CONVERGE_WITHIN: Duration = Duration::from_secs(10);
/// A liveness bound, not a performance target: detection takes a few seconds.
const DETECT_DEATH_WITHIN: Duration = Duration::from_secs(20);

fn loopback(port: u16) -> SocketAddr {
    (Ipv4Addr::LOCALHOST, port).into()
}

/// A member's config on a free loopback gossip port. The gRPC address is only
/// advertised, never bound, so any port tells members apart.
fn config(node: &str, az: &str, grpc_port: u16, seeds: &[SocketAddr]) -> MembershipConfig {
    let mut cfg = MembershipConfig::new(
        NodeId::from(node),
        Az::from(az),
        loopback(grpc_port),
        loopback(0),
        1,
    );
    cfg.seeds = seeds.to_vec();
    cfg.cluster_id = "membership-test".to_owned();
    cfg
}

async fn start_ready(cfg: MembershipConfig) -> Membership {
    let member = Membership::start(cfg).await.expect("membership starts");
    member.set_ready(true).await;
    member
}

/// Three ready members in two AZs, the second and third seeded from the first.
async fn three_members() -> [Membership; 3] {
    let a = start_ready(config("node-a", "az-1", 7001, &[])).await;
    let seed = [a.gossip_addr()];
    let b = start_ready(config("node-b", "az-1", 7002, &seed)).await;
    let c = start_ready(config("node-c", "az-2", 7003, &seed)).await;
    [a, b, c]
}

/// [`three_members`], once every one sees all three ready.
async fn three_ready_members() -> [Membership; 3] {
    let members = three_members().await;
    for member in &members {
        wait_for_view(
            &mut member.watch(),
            CONVERGE_WITHIN,
            "all three members ready",
            all_ready(&["node-a", "node-b", "node-c"]),
        )
        .await;
    }
    members
}

/// Waits until the view satisfies `until`, and returns that view.
async fn wait_for_view(
    rx: &mut watch::Receiver<View>,
    within: Duration,
    what: &str,
    until: impl FnMut(&View) -> bool,
) -> View {
    let waited = tokio::time::timeout(within, async {
        rx.wait_for(until).await.map(|view| view.clone())
    })
    .await;
    match waited {
        Ok(Ok(view)) => view,
        Ok(Err(_)) => panic!("membership stopped while waiting until {what}"),
        Err(_) => panic!(
            "not {what} within {within:?}; last view: {:?}",
            *rx.borrow()
        ),
    }
}

fn ids(view: &View) -> Vec<&str> {
    view.members().iter().map(|m| m.id.as_str()).collect()
}

fn all_ready(ids_wanted: &[&str]) -> impl FnMut(&View) -> bool {
    move |view| ids(view) == ids_wanted && view.members().iter().all(|m| m.ready)
}

fn devices() -> Vec<DeviceId> {
    (0..300)
        .map(|i| DeviceId::new(format!("meter-{i:04}")))
        .collect()
}

#[tokio::test]
async fn three_members_seeded_from_the_first_converge_on_one_view_and_place_devices_alike() {
    let members = three_members().await;
    let mut views = Vec::new();
    for member in &members {
        let view = wait_for_view(
            &mut member.watch(),
            CONVERGE_WITHIN,
            "all three members ready",
            all_ready(&["node-a", "node-b", "node-c"]),
        )
        .await;
        views.push(view);
    }
    let expected = View::new([
        Member {
            id: "node-a".into(),
            az: "az-1".into(),
            addr: loopback(7001),
            ready: true,
        },
        Member {
            id: "node-b".into(),
            az: "az-1".into(),
            addr: loopback(7002),
            ready: true,
        },
        Member {
            id: "node-c".into(),
            az: "az-2".into(),
            addr: loopback(7003),
            ready: true,
        },
    ]);
    for view in &views {
        assert_eq!(*view, expected);
    }
    for device in devices() {
        let placements: Vec<_> = views.iter().map(|v| v.place(&device)).collect();
        assert!(placements[0].is_some(), "{device} has an owner");
        assert!(
            placements.iter().all(|p| *p == placements[0]),
            "{device} placed alike on every member: {placements:?}"
        );
    }
    for member in members {
        member.shutdown().await.expect("membership stops");
    }
}

#[tokio::test]
async fn a_member_set_not_ready_is_seen_not_ready_and_placement_skips_it() {
    let [a, b, c] = three_ready_members().await;

    c.set_ready(false).await;
    let c_id = NodeId::from("node-c");
    assert_eq!(
        c.view().member(&c_id).map(|m| m.ready),
        Some(false),
        "a member's own view shows its readiness at once"
    );
    for member in [&a, &b] {
        let view = wait_for_view(
            &mut member.watch(),
            CONVERGE_WITHIN,
            "node-c is seen not ready",
            |view| view.member(&c_id).is_some_and(|m| !m.ready),
        )
        .await;
        assert_eq!(ids(&view), ["node-a", "node-b", "node-c"], "still a member");
        for device in devices() {
            let ranking = view.ranking(&device);
            assert!(
                ranking.iter().all(|m| m.id != c_id),
                "{device} skips node-c"
            );
            let placement = view.place(&device).expect("an owner");
            assert_ne!(placement.owner, c_id);
            assert_eq!(placement.replica, None, "no ready member left in az-2");
        }
    }
    for member in [a, b, c] {
        member.shutdown().await.expect("membership stops");
    }
}

#[tokio::test]
async fn a_member_shut_down_tells_the_others_and_leaves_their_views() {
    let [a, b, c] = three_ready_members().await;

    c.shutdown().await.expect("membership stops");
    for member in [&a, &b] {
        wait_for_view(
            &mut member.watch(),
            DETECT_DEATH_WITHIN,
            "node-c is dropped",
            |view| ids(view) == ["node-a", "node-b"],
        )
        .await;
    }
    for member in [a, b] {
        member.shutdown().await.expect("membership stops");
    }
}

#[tokio::test]
async fn a_member_restarted_with_a_higher_generation_on_the_same_address_rejoins() {
    let [a, b, c] = three_ready_members().await;
    let c_gossip = c.gossip_addr();
    c.shutdown().await.expect("membership stops");

    // The next life binds the same gossip address and advertises a new gRPC
    // address, so the views show which life they hold. The others need not
    // have noticed the first life's death: the higher generation wins.
    let mut next = config("node-c", "az-2", 7033, &[a.gossip_addr()]);
    next.gossip_listen = c_gossip;
    next.generation = 2;
    let c = start_ready(next).await;
    let c_id = NodeId::from("node-c");
    for member in [&a, &b, &c] {
        wait_for_view(
            &mut member.watch(),
            CONVERGE_WITHIN,
            "node-c's second life is in the view",
            |view| {
                ids(view) == ["node-a", "node-b", "node-c"]
                    && view
                        .member(&c_id)
                        .is_some_and(|m| m.ready && m.addr == loopback(7033))
            },
        )
        .await;
    }
    for member in [a, b, c] {
        member.shutdown().await.expect("membership stops");
    }
}

#[tokio::test]
async fn binding_a_gossip_address_in_use_says_which_address() {
    let a = Membership::start(config("node-a", "az-1", 7001, &[]))
        .await
        .expect("membership starts");
    let mut clash = config("node-b", "az-1", 7002, &[]);
    clash.gossip_listen = a.gossip_addr();
    let error = Membership::start(clash)
        .await
        .expect_err("the address is taken");
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("binding gossip socket {}: ", a.gossip_addr())),
        "{message}"
    );
    assert!(
        matches!(error, MembershipError::Bind { source, .. } if source.kind() == io::ErrorKind::AddrInUse)
    );
    a.shutdown().await.expect("membership stops");
}

#[tokio::test]
async fn a_wildcard_gossip_address_without_an_advertised_one_is_refused() {
    let mut cfg = config("node-a", "az-1", 7001, &[]);
    cfg.gossip_listen = (Ipv4Addr::UNSPECIFIED, 0).into();
    let error = Membership::start(cfg).await.expect_err("refused");
    assert!(matches!(error, MembershipError::Config { .. }), "{error}");
}

#[tokio::test]
async fn a_new_member_is_not_ready_until_it_says_so() {
    let a = Membership::start(config("node-a", "az-1", 7001, &[]))
        .await
        .expect("membership starts");
    let view = a.view();
    assert_eq!(ids(&view), ["node-a"]);
    assert_eq!(view.live().count(), 0);
    a.set_ready(true).await;
    assert_eq!(a.view().live().count(), 1);
    a.shutdown().await.expect("membership stops");
}

#[tokio::test]
async fn a_member_that_vanishes_without_leaving_is_declared_down() {
    let [a, b, c] = three_ready_members().await;

    // Dropped: its gossip stops without telling anyone, as in a crash.
    drop(c);
    for member in [&a, &b] {
        wait_for_view(
            &mut member.watch(),
            DETECT_DEATH_WITHIN,
            "the silent node-c is declared down",
            |view| ids(view) == ["node-a", "node-b"],
        )
        .await;
    }
    for member in [a, b] {
        member.shutdown().await.expect("membership stops");
    }
}
