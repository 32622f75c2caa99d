//! Behaviour tests of the write-ahead log against real files in temp dirs.

mod common;

mod appends;
mod faults;
mod positions;
mod readers;
mod recovery;
mod truncation;
