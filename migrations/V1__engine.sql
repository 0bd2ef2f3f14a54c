-- The task engine: task instances, their subtask DAGs, logs and worker liveness.

create table worker (
    id           text primary key,
    host         text not null,
    pid          integer not null,
    slots        integer not null check (slots > 0),
    started_at   timestamptz not null default now(),
    heartbeat_at timestamptz not null default now()
);
comment on table worker is 'One liveness row per running worker process; a row whose heartbeat is stale marks a dead process whose subtasks the sweeper recovers.';
comment on column worker.id is 'Worker identity, unique per process start (host-pid-random); written into subtask_instance.executor.';
comment on column worker.host is 'Host name of the worker process.';
comment on column worker.pid is 'Operating-system process id of the worker process.';
comment on column worker.slots is 'How many subtasks this worker runs at once at most.';
comment on column worker.started_at is 'When this worker registered.';
comment on column worker.heartbeat_at is 'Last heartbeat; older than the configured dead-after interval means the worker is gone.';

create table task_instance (
    id                 bigserial primary key,
    name               text not null check (name <> ''),
    type               text not null default 'MANUAL'
                       check (type in ('MANUAL', 'SCHEDULED', 'SYS_SCHEDULED')),
    status             text not null check (status in ('RUNNING', 'FAILED', 'SUCCESSFUL')),
    operation          text not null check (operation in ('EXECUTE', 'RETRY', 'ROLLBACK')),
    task_definition_id bigint not null default -1,
    creator            text not null,
    executor           text,
    cluster_id         bigint,
    host_id            bigint,
    server_id          bigint,
    target_key         text,
    context            jsonb not null,
    prohibit_rollback  boolean not null default false,
    max_concurrency    integer not null default 10 check (max_concurrency > 0),
    trace_id           text not null,
    idempotency_key    text unique,
    create_time        timestamptz not null default now(),
    start_time         timestamptz not null default now(),
    finish_time        timestamptz,
    check ((status = 'RUNNING') = (finish_time is null))
);
comment on table task_instance is 'One row per task: a DAG of subtasks run for one request (an OceanBase server or agent operation).';
comment on column task_instance.id is 'Task instance id, as shown by the REST API.';
comment on column task_instance.name is 'Human name of the task, e.g. "Restart OB server".';
comment on column task_instance.type is 'MANUAL (requested by a caller), SCHEDULED or SYS_SCHEDULED.';
comment on column task_instance.status is 'RUNNING until every subtask is done; SUCCESSFUL when all succeeded (or all rolled back); FAILED when a subtask failed and nothing can run.';
comment on column task_instance.operation is 'What the task is doing: EXECUTE (first run), RETRY (after a retry request) or ROLLBACK (undoing its steps).';
comment on column task_instance.task_definition_id is 'Id of the task definition; -1 for manual tasks.';
comment on column task_instance.creator is 'Name of the user who requested the task.';
comment on column task_instance.executor is 'Address of the API server that accepted the request.';
comment on column task_instance.cluster_id is 'Target OceanBase cluster, for server operations.';
comment on column task_instance.host_id is 'Target host, for agent operations.';
comment on column task_instance.server_id is 'Target OBServer, for server operations.';
comment on column task_instance.target_key is 'Lock key of the target (e.g. server:7, host:3); at most one RUNNING task per key.';
comment on column task_instance.context is 'Initial context {stringMap, listMap, parallelIdx, parallel} given to the root subtasks.';
comment on column task_instance.prohibit_rollback is 'True when the task may not be rolled back.';
comment on column task_instance.max_concurrency is 'How many of this task''s subtasks may be READY or RUNNING at once.';
comment on column task_instance.trace_id is 'Trace id of the request that created the task; carried in every log line of its runs.';
comment on column task_instance.idempotency_key is 'Idempotency-Key header of the creating request; a repeated key returns this task.';
comment on column task_instance.create_time is 'When the task was created.';
comment on column task_instance.start_time is 'When the task started running.';
comment on column task_instance.finish_time is 'When the task reached SUCCESSFUL or FAILED; null while RUNNING.';

create unique index task_instance_one_running_per_target
    on task_instance (target_key) where status = 'RUNNING' and target_key is not null;
create index task_instance_status_idx on task_instance (status, id);
create index task_instance_cluster_idx on task_instance (cluster_id, id) where cluster_id is not null;
create index task_instance_host_idx on task_instance (host_id, id) where host_id is not null;

create table subtask_instance (
    id                  bigserial primary key,
    task_id             bigint not null references task_instance (id) on delete cascade,
    series_id           integer not null check (series_id >= 0),
    name                text not null check (name <> ''),
    description         text not null,
    class_name          text not null check (class_name <> ''),
    node_type           text not null default 'JAVA_TASK',
    status              text not null
                        check (status in ('PENDING', 'READY', 'RUNNING', 'CANCELING', 'FAILED', 'SUCCESSFUL')),
    operation           text not null
                        check (operation in ('EXECUTE', 'RETRY', 'ROLLBACK', 'SKIP', 'ROLLBACK_SKIP', 'CANCEL')),
    run_time            integer not null default 1 check (run_time >= 1),
    timeout_s           integer not null check (timeout_s > 0),
    retry_limit         integer not null default 0 check (retry_limit >= 0),
    parallel_idx        integer not null default -1 check (parallel_idx >= -1),
    prohibit_rollback   boolean not null default false,
    pending_upstreams   integer not null check (pending_upstreams >= 0),
    pending_downstreams integer not null default 0 check (pending_downstreams >= 0),
    context             jsonb,
    executor            text,
    run_after           timestamptz,
    lease_expires_at    timestamptz,
    start_time          timestamptz,
    finish_time         timestamptz,
    error               text,
    unique (task_id, series_id),
    check ((status in ('RUNNING', 'CANCELING')) = (executor is not null)),
    check ((status in ('RUNNING', 'CANCELING')) = (lease_expires_at is not null)),
    check (status <> 'READY' or run_after is not null),
    check (status not in ('READY', 'RUNNING', 'CANCELING') or context is not null),
    check (status not in ('RUNNING', 'CANCELING') or start_time is not null)
) with (fillfactor = 80);
-- fillfactor leaves room on each page so that updates touching no indexed
-- column (the pending-upstream countdown) stay HOT and skip the indexes.
comment on table subtask_instance is 'One row per DAG node of a task. Workers claim READY rows, run them and finish them fenced on (id, run_time, executor, status).';
comment on column subtask_instance.id is 'Subtask instance id, as shown by the REST API.';
comment on column subtask_instance.task_id is 'The task this subtask belongs to.';
comment on column subtask_instance.series_id is '0-based number of the node within its task (not its execution order).';
comment on column subtask_instance.name is 'Step name, e.g. "Stop observer process".';
comment on column subtask_instance.description is 'Step description shown to callers.';
comment on column subtask_instance.class_name is 'Action that runs this step, looked up in the worker''s action registry.';
comment on column subtask_instance.node_type is 'Kind of node; JAVA_TASK for every step, as in OCP.';
comment on column subtask_instance.status is 'PENDING (waiting for upstreams, or rolled back), READY (may be claimed), RUNNING, CANCELING (cancel requested while running), FAILED or SUCCESSFUL.';
comment on column subtask_instance.operation is 'EXECUTE, RETRY, ROLLBACK, SKIP, ROLLBACK_SKIP or CANCEL: what the last or current run does.';
comment on column subtask_instance.run_time is 'Attempt number: 1 at first, +1 at every retry or rollback run. Also the fencing token of a run.';
comment on column subtask_instance.timeout_s is 'Seconds a run may take before it is stopped and failed.';
comment on column subtask_instance.retry_limit is 'A failed run is retried automatically while run_time <= retry_limit.';
comment on column subtask_instance.parallel_idx is 'Index into the split list when the node was split into parallel copies; -1 otherwise.';
comment on column subtask_instance.prohibit_rollback is 'True when this step, once started, forbids rolling the task back.';
comment on column subtask_instance.pending_upstreams is 'Upstreams not yet SUCCESSFUL; the subtask becomes READY when this reaches 0.';
comment on column subtask_instance.pending_downstreams is 'During a rollback: downstreams not yet rolled back; the subtask rolls back when this reaches 0.';
comment on column subtask_instance.context is 'Context {stringMap, listMap, parallelIdx, parallel} of this step: its input when READY, plus the keys it added once SUCCESSFUL.';
comment on column subtask_instance.executor is 'Worker id holding the current run (RUNNING or CANCELING only).';
comment on column subtask_instance.run_after is 'A READY subtask is not claimed before this time (retry backoff); kept after the claim, so start_time - run_after is the handoff latency.';
comment on column subtask_instance.lease_expires_at is 'When the current run''s timeout passes; the sweeper fails runs past it.';
comment on column subtask_instance.start_time is 'When the current or last run started.';
comment on column subtask_instance.finish_time is 'When the last run finished.';
comment on column subtask_instance.error is 'Why the last run failed, if it did.';

-- The claim reads only READY rows in run_after order: this partial index keeps
-- its cost independent of the finished history.
create index subtask_instance_ready_idx on subtask_instance (run_after) where status = 'READY';
create index subtask_instance_running_idx on subtask_instance (executor) where status in ('RUNNING', 'CANCELING');
-- Lookups by task use the unique (task_id, series_id) index.

create table subtask_edge (
    upstream_id   bigint not null references subtask_instance (id) on delete cascade,
    downstream_id bigint not null references subtask_instance (id) on delete cascade,
    primary key (upstream_id, downstream_id),
    check (upstream_id <> downstream_id)
);
comment on table subtask_edge is 'The DAG: downstream_id may run only after upstream_id succeeded.';
comment on column subtask_edge.upstream_id is 'The subtask that must finish first.';
comment on column subtask_edge.downstream_id is 'The subtask that waits for it.';
create index subtask_edge_downstream_idx on subtask_edge (downstream_id, upstream_id);

create table subtask_log (
    id         bigserial primary key,
    subtask_id bigint not null references subtask_instance (id) on delete cascade,
    run_time   integer not null check (run_time >= 1),
    log_time   timestamptz not null default now(),
    line       text not null
);
comment on table subtask_log is 'Log lines written by subtask runs, per run_time; each run opens with a separator line.';
comment on column subtask_log.id is 'Order of the lines.';
comment on column subtask_log.subtask_id is 'The subtask that wrote the line.';
comment on column subtask_log.run_time is 'The run (attempt) that wrote the line.';
comment on column subtask_log.log_time is 'When the line was written.';
comment on column subtask_log.line is 'The line itself.';
create index subtask_log_subtask_idx on subtask_log (subtask_id, run_time, id);
