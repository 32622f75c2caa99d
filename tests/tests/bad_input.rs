//! Malformed and oversized batches are refused whole with the offending
//! index and field; nothing of a refused batch is applied.

use futures::StreamExt;
use vatio_proto::v1::{self};
use vatio_tests::{T0_MS, TestNode, batch, power};

fn ok(device: &str, seq: u64) -> v1::Reading {
    power(device, seq, T0_MS - 1_000, 5.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_without_device_id_refuses_the_whole_batch() -> anyhow::Result<()> {
    let t = TestNode::start().await?;
    let mut ingest = t.ingest().await?;
    let err = ingest
        .ingest_batch(batch(7, vec![ok("meter-09", 1), ok("", 2)]))
        .await
        .expect_err("batch must be refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("readings[1].device_id"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("batch 7"), "{}", err.message());

    // Nothing of it was applied: meter-09's seq 1 is still new.
    let ack = ingest
        .ingest_batch(batch(8, vec![ok("meter-09", 1)]))
        .await?
        .into_inner();
    assert_eq!((ack.accepted, ack.duplicates), (1, 0));
    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_batch_is_refused_with_the_limit() -> anyhow::Result<()> {
    let t = TestNode::start().await?;
    let max = t.cfg.ingest.max_batch_readings as u64;
    let readings = (1..=max + 1).map(|s| ok("meter-10", s)).collect();
    let err = t
        .ingest()
        .await?
        .ingest_batch(batch(1, readings))
        .await
        .expect_err("oversized batch must be refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("max_batch_readings"),
        "{}",
        err.message()
    );
    let status = t.status().await?;
    assert_eq!(status.readings_accepted, 0);
    t.node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_acks_every_batch_in_order() -> anyhow::Result<()> {
    let t = TestNode::start().await?;
    let requests: Vec<v1::IngestRequest> = (1..=20u64)
        .map(|b| {
            batch(
                b,
                (1..=10).map(|i| ok("meter-11", (b - 1) * 10 + i)).collect(),
            )
        })
        .collect();
    let mut stream = t
        .ingest()
        .await?
        .ingest(futures::stream::iter(requests))
        .await?
        .into_inner();
    let mut acks = Vec::new();
    while let Some(ack) = stream.next().await {
        acks.push(ack?);
    }
    let ids: Vec<u64> = acks.iter().map(|a| a.batch_id).collect();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    assert!(acks.iter().all(|a| a.accepted == 10));
    t.node.shutdown().await?;
    Ok(())
}
