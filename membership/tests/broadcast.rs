//! Two in-process memberships on loopback: broadcasts arrive once, and an
//! oversized broadcast is refused with an error naming the limit.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::time::Duration;

use mob_membership::{
    ClusterKey, Error, MAX_BROADCAST, MemberState, Membership, MembershipConfig, Timings,
};

fn config(name: &str, key: &ClusterKey, seeds: Vec<std::net::SocketAddr>) -> MembershipConfig {
    MembershipConfig {
        name: name.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        seeds,
        keyring: mob_membership::Keyring::single(key.clone()),
        epoch: 1,
        data_dir: None,
        timings: Timings::default(),
        frame_limit: mob_membership::stream::DEFAULT_FRAME_LIMIT,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcasts_reach_peers_once_and_oversized_ones_are_refused() {
    let key = ClusterKey::generate();
    let (a, _a_channels) = Membership::start(config("a", &key, vec![])).await.unwrap();
    let (b, mut b_channels) = Membership::start(config("b", &key, vec![a.local().addr]))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !a
        .members()
        .iter()
        .any(|m| m.id.name == "b" && m.state == MemberState::Alive)
    {
        assert!(tokio::time::Instant::now() < deadline, "b never joined a");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    a.broadcast(b"table delta".to_vec()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), b_channels.broadcasts.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"table delta");
    // Delivered once, though gossip carries it several times.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), b_channels.broadcasts.recv())
            .await
            .is_err()
    );

    match a.broadcast(vec![0; MAX_BROADCAST + 1]).await {
        Err(Error::BroadcastTooLarge { size, limit }) => {
            assert_eq!((size, limit), (MAX_BROADCAST + 1, MAX_BROADCAST));
        }
        other => panic!("expected BroadcastTooLarge, got {other:?}"),
    }
    let err = a.broadcast(vec![0; 5000]).await.unwrap_err().to_string();
    assert!(
        err.contains("5000") && err.contains(&MAX_BROADCAST.to_string()),
        "{err}"
    );
    drop(b);
}
