//! The store's schema, as numbered migrations.

/// Schema migrations, applied in order; the index + 1 is the schema version.
pub(super) const MIGRATIONS: &[&str] = &[
    "CREATE TABLE replicas (
        name TEXT PRIMARY KEY,
        vm TEXT NOT NULL,
        destinations TEXT NOT NULL,
        schedule TEXT,
        keep_points INTEGER NOT NULL,
        chunk_size BIGINT NOT NULL,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        replica TEXT NOT NULL,
        trigger_kind TEXT NOT NULL,
        status TEXT NOT NULL,
        phase TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        finished_at BIGINT,
        duration_ms BIGINT,
        owner_pid BIGINT,
        owner_start BIGINT,
        bytes_read BIGINT NOT NULL DEFAULT 0,
        bytes_sent BIGINT NOT NULL DEFAULT 0,
        bytes_skipped BIGINT NOT NULL DEFAULT 0,
        error TEXT
    );
    CREATE INDEX runs_by_replica ON runs (replica, started_at);
    CREATE TABLE run_disks (
        run_id TEXT NOT NULL,
        disk TEXT NOT NULL,
        destination INTEGER NOT NULL,
        generation BIGINT NOT NULL,
        full_sync INTEGER NOT NULL,
        full_sync_reason TEXT,
        bytes_read BIGINT NOT NULL,
        bytes_sent BIGINT NOT NULL,
        bytes_skipped BIGINT NOT NULL,
        PRIMARY KEY (run_id, disk, destination)
    );
    CREATE TABLE resources (
        name TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        replica TEXT NOT NULL,
        kind TEXT NOT NULL,
        disk TEXT,
        state TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        deleted_at BIGINT
    );
    CREATE INDEX resources_by_run ON resources (run_id);",
    // What the source VM looked like at its latest run (osType, Hyper-V
    // generation, security type, location, disks): an import must not need
    // the source region, which may be the one that is down.
    "CREATE TABLE vm_facts (
        replica TEXT PRIMARY KEY,
        facts TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    ALTER TABLE replicas ADD COLUMN stop_source INTEGER NOT NULL DEFAULT 0;",
    // One vocabulary for what a sync did with the disk: zero, unchanged,
    // written, cleared (bytes_skipped lumped zero and unchanged together).
    // Rows from before keep zeros there: the split was not recorded.
    "ALTER TABLE run_disks ADD COLUMN bytes_zero BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE run_disks ADD COLUMN bytes_unchanged BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE run_disks ADD COLUMN bytes_written BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE run_disks ADD COLUMN bytes_cleared BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE run_disks DROP COLUMN bytes_skipped;
    ALTER TABLE runs ADD COLUMN bytes_zero BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN bytes_unchanged BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN bytes_written BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE runs ADD COLUMN bytes_cleared BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE runs DROP COLUMN bytes_skipped;",
    // What the run's worker could do (an Azure size's data disks and
    // uncached throughput), as its provider said.
    "ALTER TABLE runs ADD COLUMN worker TEXT;",
    // Where the run's agent ran: `vm` (a worker with temporary disks) or
    // `here` (an agent on the coordinator's host); why is in `worker`.
    "ALTER TABLE runs ADD COLUMN placement TEXT;",
    // What the run's snapshots hold together: `stopped` (the source was
    // deallocated for them: every disk at one instant, shut down) or
    // `per-disk` (each disk at its own instant).
    "ALTER TABLE runs ADD COLUMN consistency TEXT;",
    // What a replica asks of its snapshots together (`crash`, `application`,
    // `per-disk`), and why a run's differ from it (an application-
    // consistent capture that fell back to crash, a provider without
    // restore points).
    "ALTER TABLE replicas ADD COLUMN consistency TEXT NOT NULL DEFAULT 'crash';
    ALTER TABLE runs ADD COLUMN consistency_note TEXT;",
    // Failover (issue 19): a replica failed over stops syncing; each
    // failover or drill, with what it made, recorded before it is made.
    "ALTER TABLE replicas ADD COLUMN failed_over_at BIGINT;
    CREATE TABLE failovers (
        id TEXT PRIMARY KEY,
        replica TEXT NOT NULL,
        drill INTEGER NOT NULL,
        target TEXT NOT NULL,
        made TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT,
        cleaned_at BIGINT
    );",
    // Several coordinators on one database (issue 20): a replica's run is
    // held under a lease with an expiry and a fencing number that only
    // grows; a run records who ran it (`daemon`: HOST:PID), on which boot
    // of which host (a process there is checked directly), its fencing
    // number, and the scheduled fire time it is for (`slot`: one run or
    // skip per slot, whichever daemon took it).
    "CREATE TABLE leases (
        replica TEXT PRIMARY KEY,
        fence BIGINT NOT NULL,
        holder TEXT,
        run_id TEXT,
        expires_at BIGINT NOT NULL
    );
    ALTER TABLE runs ADD COLUMN daemon TEXT;
    ALTER TABLE runs ADD COLUMN boot TEXT;
    ALTER TABLE runs ADD COLUMN fence BIGINT;
    ALTER TABLE runs ADD COLUMN slot BIGINT;
    CREATE UNIQUE INDEX runs_by_slot ON runs (replica, slot);",
    // Image replication (issue 22): the image version a run read, so each
    // recovery point is named by it; a note on how a run went (one that
    // found its image version already at every destination).
    "ALTER TABLE runs ADD COLUMN version TEXT;
    ALTER TABLE runs ADD COLUMN note TEXT;",
];
