//! The run lifecycle as a pure state machine: it says what to do next
//! ([`Action`]) and is told how that went ([`Outcome`]); it never does I/O
//! itself. The executor (`execute.rs`) carries the actions out against a
//! `Cloud`. Keeping the decisions here makes the one rule that matters easy
//! to check: whatever step fails, everything that step or an earlier one
//! *may* have created is torn down, in reverse order, and a failing teardown
//! step does not stop the next one.
//!
//! ```text
//! ReadVm -> Snapshot -> CreateTempDisks -> StartWorker -> Watch
//!        -> DeleteWorker -> DeleteTempDisks -> Settle{ok} -> Finish
//! a failure at step S jumps to the teardown of what S and its predecessors started
//! ```

/// What the executor should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the source VM: its disks and their sizes.
    ReadVm,
    /// Snapshot every disk, together.
    Snapshot,
    /// Choose where the agent runs: a worker with temporary disks, or an
    /// agent here reading the snapshots over HTTPS ([`Lifecycle::here`]).
    Place,
    /// Create a temporary disk from each snapshot.
    CreateTempDisks,
    /// Write the job and start the worker with the temporary disks.
    StartWorker,
    /// Watch the worker's status until it finishes or the deadline passes.
    Watch,
    /// Delete the worker (and its NIC, job, logs).
    DeleteWorker,
    /// Delete the temporary disks.
    DeleteTempDisks,
    /// Snapshots: if the disks synced, keep this run's and delete older
    /// ones; else delete this run's and keep the older ones.
    Settle { succeeded: bool },
    /// Record the run's result; nothing follows.
    Finish { succeeded: bool },
}

impl Action {
    /// The phase name stored in the run row while this action runs.
    pub fn phase(self) -> &'static str {
        match self {
            Action::ReadVm => "read-vm",
            Action::Snapshot => "snapshot",
            Action::Place => "place",
            Action::CreateTempDisks => "temp-disks",
            Action::StartWorker => "start-worker",
            Action::Watch => "sync",
            Action::DeleteWorker => "delete-worker",
            Action::DeleteTempDisks => "delete-temp-disks",
            Action::Settle { .. } => "settle-snapshots",
            Action::Finish { .. } => "done",
        }
    }

    fn is_teardown(self) -> bool {
        matches!(self, Action::DeleteWorker | Action::DeleteTempDisks | Action::Settle { .. })
    }
}

/// How an action went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed(String),
}

/// One run's position in the lifecycle.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    next: Action,
    /// The first error; teardown errors are appended after it.
    errors: Vec<String>,
    /// How far the forward path got (steps attempted, whether or not they finished).
    attempted_snapshot: bool,
    attempted_temp: bool,
    attempted_worker: bool,
    /// The worker finished and every disk synced: new recovery points exist.
    synced: bool,
    /// Placed here: no temporary disks, the worker is an agent on this host.
    here: bool,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    pub fn new() -> Self {
        Self {
            next: Action::ReadVm,
            errors: Vec::new(),
            attempted_snapshot: false,
            attempted_temp: false,
            attempted_worker: false,
            synced: false,
            here: false,
        }
    }

    /// The action to carry out now.
    pub fn next(&self) -> Action {
        self.next
    }

    pub fn failed(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Every error, the cause first.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// [`Action::Place`] chose an agent on this host: no temporary disks;
    /// the worker started next is that agent. Called before reporting it.
    pub fn place_here(&mut self) {
        self.here = true;
    }

    /// [`Action::ReadVm`] found nothing to sync (an image version already
    /// at every destination): the run ends there, successfully. Called
    /// after reporting it; nothing was made, so nothing is torn down.
    pub fn nothing_to_sync(&mut self) {
        if self.next == Action::Snapshot && !self.failed() {
            self.next = Action::Finish { succeeded: true };
        }
    }

    /// Report how [`Self::next`] went and move on.
    pub fn report(&mut self, outcome: Outcome) {
        let action = self.next;
        match action {
            Action::Snapshot => self.attempted_snapshot = true,
            Action::CreateTempDisks => self.attempted_temp = true,
            Action::StartWorker => self.attempted_worker = true,
            _ => {}
        }
        match outcome {
            Outcome::Failed(e) => self.errors.push(e),
            Outcome::Done if action == Action::Watch => self.synced = true,
            Outcome::Done => {}
        }
        self.next =
            if action.is_teardown() || !self.failed() { self.after(action) } else { self.teardown_from_start() };
    }

    fn after(&self, a: Action) -> Action {
        let ok = !self.failed();
        match a {
            Action::ReadVm => Action::Snapshot,
            Action::Snapshot => Action::Place,
            Action::Place if self.here => Action::StartWorker,
            Action::Place => Action::CreateTempDisks,
            Action::CreateTempDisks => Action::StartWorker,
            Action::StartWorker => Action::Watch,
            Action::Watch => Action::DeleteWorker,
            Action::DeleteWorker if self.attempted_temp => Action::DeleteTempDisks,
            Action::DeleteWorker | Action::DeleteTempDisks if self.attempted_snapshot => {
                Action::Settle { succeeded: self.synced }
            }
            Action::DeleteWorker | Action::DeleteTempDisks | Action::Settle { .. } | Action::Finish { .. } => {
                Action::Finish { succeeded: ok }
            }
        }
    }

    /// The first teardown step for what was attempted so far.
    fn teardown_from_start(&self) -> Action {
        if self.attempted_worker {
            Action::DeleteWorker
        } else if self.attempted_temp {
            Action::DeleteTempDisks
        } else if self.attempted_snapshot {
            Action::Settle { succeeded: false }
        } else {
            Action::Finish { succeeded: false }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drive a lifecycle, failing the `fail_at`-th action (0-based) and,
    /// optionally, every teardown action; return the actions taken.
    fn drive(fail_at: Option<usize>, teardown_fails: bool) -> (Vec<Action>, Lifecycle) {
        let mut l = Lifecycle::new();
        let mut taken = Vec::new();
        for i in 0..32 {
            let a = l.next();
            taken.push(a);
            if let Action::Finish { .. } = a {
                return (taken, l);
            }
            let fail = fail_at == Some(i) || (teardown_fails && a.is_teardown());
            l.report(if fail { Outcome::Failed(format!("step {i}")) } else { Outcome::Done });
        }
        panic!("lifecycle did not finish: {taken:?}");
    }

    #[test]
    fn success_path() {
        let (taken, l) = drive(None, false);
        assert_eq!(
            taken,
            vec![
                Action::ReadVm,
                Action::Snapshot,
                Action::Place,
                Action::CreateTempDisks,
                Action::StartWorker,
                Action::Watch,
                Action::DeleteWorker,
                Action::DeleteTempDisks,
                Action::Settle { succeeded: true },
                Action::Finish { succeeded: true },
            ]
        );
        assert!(!l.failed());
    }

    #[test]
    fn nothing_to_sync_ends_after_reading_the_source() {
        let mut l = Lifecycle::new();
        l.report(Outcome::Done);
        l.nothing_to_sync();
        assert_eq!(l.next(), Action::Finish { succeeded: true });
        // Once a snapshot was attempted, or after a failure, it changes nothing.
        let mut l = Lifecycle::new();
        l.report(Outcome::Failed("read".into()));
        l.nothing_to_sync();
        assert_eq!(l.next(), Action::Finish { succeeded: false });
        let mut l = Lifecycle::new();
        l.report(Outcome::Done);
        l.report(Outcome::Done);
        l.nothing_to_sync();
        assert_eq!(l.next(), Action::Place);
    }

    #[test]
    fn a_failure_tears_down_exactly_what_was_attempted() {
        use Action::*;
        let teardown = |from: usize| -> Vec<Action> {
            [DeleteWorker, DeleteTempDisks, Settle { succeeded: false }][3 - from..].to_vec()
        };
        // (failing step, how many teardown steps follow)
        for (step, n) in [(0, 0), (1, 1), (2, 1), (3, 2), (4, 3), (5, 3)] {
            let (taken, l) = drive(Some(step), false);
            assert_eq!(taken[step + 1..taken.len() - 1], teardown(n)[..], "failing step {step}: {taken:?}");
            assert_eq!(taken.last(), Some(&Finish { succeeded: false }));
            assert_eq!(l.errors(), [format!("step {step}")]);
        }
    }

    #[test]
    fn failing_teardown_steps_do_not_stop_the_rest() {
        let (taken, l) = drive(Some(5), true);
        assert_eq!(taken.len(), 10);
        assert_eq!(l.errors().len(), 4, "cause first, then each teardown error: {:?}", l.errors());
        assert_eq!(l.errors()[0], "step 5");
        // A teardown failure after a successful sync fails the run, but the
        // new snapshots are kept: the recovery points they match exist.
        let (taken, _) = drive(None, true);
        assert_eq!(taken[8..], [Action::Settle { succeeded: true }, Action::Finish { succeeded: false }]);
    }

    #[test]
    fn placed_here_a_run_has_no_temporary_disks() {
        use Action::*;
        let run = |fail_at: Option<usize>| {
            let mut l = Lifecycle::new();
            let mut taken = Vec::new();
            for i in 0..16 {
                let a = l.next();
                taken.push(a);
                if let Finish { .. } = a {
                    break;
                }
                if a == Place {
                    l.place_here();
                }
                l.report(if fail_at == Some(i) { Outcome::Failed("x".into()) } else { Outcome::Done });
            }
            taken
        };
        let ok = [ReadVm, Snapshot, Place, StartWorker, Watch, DeleteWorker, Settle { succeeded: true }];
        assert_eq!(run(None), [&ok[..], &[Finish { succeeded: true }]].concat());
        // The agent here failed: it is stopped, and this run's snapshots go.
        assert_eq!(
            run(Some(4)),
            [
                ReadVm,
                Snapshot,
                Place,
                StartWorker,
                Watch,
                DeleteWorker,
                Settle { succeeded: false },
                Finish { succeeded: false }
            ]
        );
    }
}
