//! Which driver errors are the data's fault.
//!
//! A sink retries a transient error while the write-ahead log holds the
//! data, and dead-letters what the store refuses for good. Erring towards
//! "transient" stalls a sink on one bad document; erring towards "data"
//! dead-letters good data during an outage. So only errors a document
//! causes count as data errors: a write error (validation failure, bad
//! value, duplicate key) unless its code is a server-state one, a command
//! error with a document-shaped code, and a request the driver could not
//! encode. Network errors, timeouts, server selection, authentication,
//! elections and missing namespaces are transient.

use ::mongodb::error::{
    Error as MongoError, ErrorKind, RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR,
    WriteFailure,
};

/// Server error codes that say the document itself was refused.
const DATA_CODES: &[i32] = &[
    2,     // BadValue
    9,     // FailedToParse
    10,    // BSONObjectTooLarge
    14,    // TypeMismatch
    52,    // DollarPrefixedFieldName
    53,    // InvalidIdField
    55,    // InvalidDBRef
    56,    // EmptyFieldName
    57,    // DottedFieldName
    66,    // ImmutableField
    121,   // DocumentValidationFailure
    11000, // DuplicateKey
    11001, // DuplicateKey (legacy)
    12582, // DuplicateKey on update (legacy)
    17280, // KeyTooLong
    17419, // document larger than 16 MiB after the update
];

/// Server error codes that say the server's state is at fault, even when
/// they come back as one document's write error of a batch.
const STATE_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    13,    // Unauthorized
    18,    // AuthenticationFailed
    24,    // LockTimeout
    26,    // NamespaceNotFound
    46,    // LockBusy
    50,    // MaxTimeMSExpired
    64,    // WriteConcernFailed
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    112,   // WriteConflict
    133,   // FailedToSatisfyReadPreference
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10058, // LegacyNotPrimary
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
    16500, // request rate too large (Cosmos DB's MongoDB API)
];

/// Whether a write error's code (one document of a batch) is the data's
/// fault: any code but a server-state one.
pub(super) fn is_data_write_code(code: i32) -> bool {
    !STATE_CODES.contains(&code)
}

/// Whether `e` was caused by the data itself, so retrying the same write
/// cannot succeed; false for network, timeout, server selection, auth,
/// election and missing-namespace errors, which are retried.
pub(crate) fn is_data_error(e: &MongoError) -> bool {
    if e.contains_label(RETRYABLE_WRITE_ERROR) || e.contains_label(TRANSIENT_TRANSACTION_ERROR) {
        return false;
    }
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => is_data_write_code(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(_)) => false,
        ErrorKind::Command(c) => DATA_CODES.contains(&c.code),
        ErrorKind::InsertMany(m) => {
            m.write_concern_error.is_none()
                && m.write_errors
                    .as_ref()
                    .is_some_and(|w| !w.is_empty() && w.iter().all(|w| is_data_write_code(w.code)))
        }
        ErrorKind::BulkWrite(b) => {
            b.write_concern_errors.is_empty()
                && !b.write_errors.is_empty()
                && b.write_errors.values().all(|w| is_data_write_code(w.code))
        }
        // A document the driver could not encode, or a request it refused
        // to build from it: the same data fails the same way again.
        ErrorKind::InvalidArgument { .. }
        | ErrorKind::Bson(_)
        | ErrorKind::BsonSerialization(_)
        | ErrorKind::BsonDeserialization(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ::mongodb::bson::{deserialize_from_document, doc};
    use ::mongodb::error::{CommandError, WriteConcernError, WriteError};

    use super::*;

    fn command(code: i32) -> MongoError {
        let e: CommandError =
            deserialize_from_document(doc! { "code": code, "codeName": "X", "errmsg": "x" })
                .unwrap_or_else(|e| panic!("{e}"));
        ErrorKind::Command(e).into()
    }

    fn write(code: i32) -> MongoError {
        let e: WriteError = deserialize_from_document(doc! { "code": code, "errmsg": "x" })
            .unwrap_or_else(|e| panic!("{e}"));
        ErrorKind::Write(WriteFailure::WriteError(e)).into()
    }

    #[test]
    fn the_documents_faults_are_data_errors() {
        for code in [2, 14, 121, 11000] {
            assert!(is_data_error(&write(code)), "write error {code}");
            assert!(is_data_error(&command(code)), "command error {code}");
        }
        // Any other write error is the document's too …
        assert!(is_data_error(&write(66)));
    }

    #[test]
    fn the_servers_state_is_not() {
        // … unless its code is the server's state.
        for code in [10107, 11602, 91, 189, 50, 112] {
            assert!(!is_data_error(&write(code)), "write error {code}");
            assert!(!is_data_error(&command(code)), "command error {code}");
        }
        // Auth, a missing namespace, an unknown command code: retried.
        for code in [13, 18, 26, 8000] {
            assert!(!is_data_error(&command(code)), "command error {code}");
        }
        let io: MongoError = ErrorKind::Io(Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )))
        .into();
        assert!(!is_data_error(&io));
        let wce: WriteConcernError =
            deserialize_from_document(doc! { "code": 64, "errmsg": "waiting for replication" })
                .unwrap_or_else(|e| panic!("{e}"));
        let wce: MongoError = ErrorKind::Write(WriteFailure::WriteConcernError(wce)).into();
        assert!(!is_data_error(&wce));
    }
}
