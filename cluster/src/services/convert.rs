//! Translation between the wire types (`vatio.v1`) and the store model, and
//! from internal errors to gRPC statuses.

use tonic::Status;
use vatio_actors::IngestError;
use vatio_proto::v1;
use vatio_stores::{DeadLetter, DeviceKind, RawReading};

pub fn raw_from_wire(r: v1::Reading) -> RawReading {
    RawReading {
        device_id: r.device_id,
        seq: r.seq,
        ts_ms: r.ts_unix_ms,
        metric: r.metric,
        value: r.value,
        unit: r.unit,
        kind: r.kind,
    }
}

pub fn raw_to_wire(r: &RawReading) -> v1::Reading {
    v1::Reading {
        device_id: r.device_id.clone(),
        seq: r.seq,
        ts_unix_ms: r.ts_ms,
        metric: r.metric.clone(),
        value: r.value,
        unit: r.unit.clone(),
        kind: r.kind,
    }
}

/// Like [`raw_to_wire`], moving the strings (forwarding a batch).
pub fn raw_into_wire(r: RawReading) -> v1::Reading {
    v1::Reading {
        device_id: r.device_id,
        seq: r.seq,
        ts_unix_ms: r.ts_ms,
        metric: r.metric,
        value: r.value,
        unit: r.unit,
        kind: r.kind,
    }
}

pub fn kind_to_wire(k: DeviceKind) -> v1::DeviceKind {
    match k {
        DeviceKind::ClimateSensor => v1::DeviceKind::ClimateSensor,
        DeviceKind::RobotArm => v1::DeviceKind::RobotArm,
        DeviceKind::ElectricityMeter => v1::DeviceKind::ElectricityMeter,
    }
}

/// `None` for "unspecified" (no filter); an error for values no kind has.
pub fn kind_filter(wire: i32) -> Result<Option<DeviceKind>, Status> {
    match v1::DeviceKind::try_from(wire) {
        Ok(v1::DeviceKind::Unspecified) => Ok(None),
        Ok(v1::DeviceKind::ClimateSensor) => Ok(Some(DeviceKind::ClimateSensor)),
        Ok(v1::DeviceKind::RobotArm) => Ok(Some(DeviceKind::RobotArm)),
        Ok(v1::DeviceKind::ElectricityMeter) => Ok(Some(DeviceKind::ElectricityMeter)),
        Err(_) => Err(Status::invalid_argument(format!(
            "kind: unknown device kind {wire}"
        ))),
    }
}

/// `node` is the node holding the letter (its id is unique there only).
pub fn dead_letter_to_wire(d: &DeadLetter, node: &str) -> v1::DeadLetter {
    v1::DeadLetter {
        node_id: node.to_owned(),
        id: d.id.0,
        reading: Some(raw_to_wire(&d.letter.reading)),
        reason: d.letter.reason.as_str().to_string(),
        detail: d.letter.detail.clone(),
        source: d.letter.source.clone(),
        received_unix_ms: d.letter.received_ms,
        replayed_unix_ms: d.replayed_ms.unwrap_or(0),
        replay_attempts: d.replay_attempts,
    }
}

/// Metadata key carrying the retry hint of a `RESOURCE_EXHAUSTED` answer.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

pub fn ingest_status(e: IngestError) -> Status {
    match e {
        IngestError::Overloaded {
            reason,
            retry_after,
        } => {
            let ms = retry_after.as_millis();
            let mut status = Status::resource_exhausted(format!(
                "node at capacity ({reason}); nothing of this batch was taken, retry after {ms} ms"
            ));
            if let Ok(v) = ms.to_string().parse() {
                status.metadata_mut().insert(RETRY_AFTER_MS, v);
            }
            status
        }
        IngestError::Log(message) => Status::unavailable(format!(
            "the write-ahead log did not take this batch ({message}); nothing of it that failed \
             was applied, send it again"
        )),
        IngestError::Stopped => Status::unavailable("node is stopping"),
        IngestError::NotOwned(_) | IngestError::Moved(_) => {
            Status::unavailable(format!("{e}; membership is settling, send the batch again"))
        }
        IngestError::NoReplica => {
            Status::unavailable(format!("{e}; nothing of this batch was taken"))
        }
        IngestError::Replication(_) => Status::unavailable(format!(
            "{e}; send the batch again (it will count as duplicates)"
        )),
    }
}

pub fn store_status(e: vatio_stores::Error) -> Status {
    if e.is_transient() {
        Status::unavailable(e.to_string())
    } else {
        Status::internal(e.to_string())
    }
}
