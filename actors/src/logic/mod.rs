//! Pure device and window logic, free of actors, clocks and I/O: validation,
//! dedupe and reordering, minute windows, threshold events. Time comes in as
//! arguments so the same inputs always give the same outputs.

pub mod device;
pub mod epoch;
pub mod events;
pub mod validate;
pub mod voided;
pub mod windows;
