//! # diskferry (coordinator)
//!
//! The control plane. It never touches disk bytes: it drives a [`cloud::Cloud`]
//! through the run lifecycle and hands the data plane to `diskferry-agent`.
//!
//! - [`lifecycle`]: the run as a pure state machine (what to do next).
//! - [`execute`]: carries a run out against a cloud, recording resources first.
//! - [`cloud`]: the provider trait; [`cloud::local`] is the embedded default.
//! - [`store`]: SQLite state (replicas, runs, resources), migrations.
//! - [`gc`]: deletes what dead or finished runs left behind.
//! - [`preflight`]: what would fail, found before anything is created.
//! - [`daemon`]: cron schedules, overlap policy, Prometheus metrics.
//! - [`destination`], [`schedule`], [`config`], [`owner`], [`failpoint`]: small helpers.
//! - [`cli`]: the `diskferry` command line.

pub mod cli;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod daemon;
pub mod destination;
pub mod env;
pub mod error;
pub mod execute;
pub mod failpoint;
pub mod gc;
pub mod lifecycle;
pub mod owner;
pub mod preflight;
pub mod schedule;
pub mod store;
