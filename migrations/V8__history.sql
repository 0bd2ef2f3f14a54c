-- Task history at scale: indexes that serve every filter and sort of the task
-- list and the DBAs' time windows, the daily rollups the DBA views read (kept
-- from a queue the settling of each task fills), the views themselves, and a
-- NOLOGIN role that may read the history and nothing else.

-- Name substring filters (`ilike '%…%'`) use a trigram index when pg_trgm is
-- available (Debian's postgresql-contrib ships it; it is a trusted extension,
-- so the database owner may create it). Without it the filter still works, by
-- scanning.
do $$
begin
    if exists (select 1 from pg_available_extensions where name = 'pg_trgm') then
        create extension if not exists pg_trgm;
        execute 'create index task_instance_name_trgm_idx on task_instance using gin (name gin_trgm_ops)';
    end if;
end
$$;

-- Sorts and time windows: each (key, id) matches the list's `order by key,
-- id`, so a page is read from the index in order and stops at its size.
create index task_instance_create_time_idx on task_instance (create_time, id);
create index task_instance_start_time_idx on task_instance (start_time, id);
create index task_instance_finish_time_idx on task_instance (finish_time, id);
create index task_instance_name_idx on task_instance (name, id);
create index task_instance_creator_idx on task_instance (creator, id);
create index task_instance_type_idx on task_instance (type, id);
create index task_instance_server_idx on task_instance (server_id, id) where server_id is not null;
-- Failed tasks of a time window, the DBAs' most frequent question.
create index task_instance_failed_idx on task_instance (create_time) where status = 'FAILED';

-- ---------------------------------------------------------------- rollups

alter table task_instance add column last_settled_at timestamptz;
comment on column task_instance.last_settled_at is 'When the task last became SUCCESSFUL or FAILED (kept while a retry or rollback runs); set by a trigger, read by the history rollup.';

create table history_rollup_queue (
    id         bigserial primary key,
    task_id    bigint not null,
    status     text not null check (status in ('FAILED', 'SUCCESSFUL')),
    since      timestamptz,
    settled_at timestamptz not null
);
create index history_rollup_queue_task_idx on history_rollup_queue (task_id);
comment on table history_rollup_queue is 'Tasks that settled and are not yet counted in the daily rollups; filled by a trigger on task_instance, drained by the maintenance pass of one replica at a time.';
comment on column history_rollup_queue.id is 'Order of the settlings.';
comment on column history_rollup_queue.task_id is 'The task that settled (it may have been pruned since: then it is dropped from the queue uncounted).';
comment on column history_rollup_queue.status is 'How the task settled.';
comment on column history_rollup_queue.since is 'When the task had settled before (a retry or rollback ran since); only subtasks finished after it are counted again. Null for the first settling.';
comment on column history_rollup_queue.settled_at is 'When the task settled.';

-- Before the update, so the mark costs no second row version.
create function taskd_task_settled() returns trigger language plpgsql as $$
begin
    if new.status <> 'RUNNING' and old.status = 'RUNNING' then
        insert into history_rollup_queue (task_id, status, since, settled_at)
        values (new.id, new.status, old.last_settled_at, coalesce(new.finish_time, now()));
        new.last_settled_at := coalesce(new.finish_time, now());
    end if;
    return new;
end
$$;
create trigger task_instance_settled before update of status on task_instance
    for each row when (old.status is distinct from new.status)
    execute function taskd_task_settled();

-- Durations are kept as histograms with buckets growing by 25%: bucket 0 is
-- [0, 1 ms), bucket i >= 1 is [1.25^(i-1), 1.25^i) ms, 100 buckets (up to 45
-- days). Histograms add up across batches and days; a quantile read from one
-- is the geometric middle of its bucket, within 12% of the exact value.
create function taskd_hist_bucket(ms float8) returns int
    language sql immutable parallel safe
    return case when ms is null or ms < 1 then 0
                else least(1 + floor(ln(ms) / ln(1.25))::int, 99) end;
comment on function taskd_hist_bucket(float8) is 'Histogram bucket of a duration in milliseconds (see taskd_hist_quantile).';

create function taskd_hist_of(buckets int[], counts bigint[]) returns bigint[]
    language sql immutable parallel safe
    return (select array_agg(coalesce(c.n, 0)::bigint order by g)
            from generate_series(0, 99) g
            left join (select b, sum(n) as n from unnest(buckets, counts) as u(b, n) group by b) c
                   on c.b = g);
comment on function taskd_hist_of(int[], bigint[]) is 'A 100-bucket histogram from parallel arrays of bucket numbers and counts.';

create function taskd_hist_add(a bigint[], b bigint[]) returns bigint[]
    language sql immutable parallel safe
    return (select array_agg(coalesce(x, 0) + coalesce(y, 0) order by i)
            from unnest(a, b) with ordinality as u(x, y, i));
comment on function taskd_hist_add(bigint[], bigint[]) is 'Sum of two histograms.';

create aggregate taskd_hist_sum(bigint[]) (sfunc = taskd_hist_add, stype = bigint[]);
comment on aggregate taskd_hist_sum(bigint[]) is 'Sum of histograms, e.g. over the days of a window.';

create function taskd_hist_quantile(h bigint[], q float8) returns float8
    language sql immutable parallel safe
    return (select case when i = 1 then 0.5 else power(1.25, i - 1.5) end
            from (select i, sum(n) over (order by i) as cum, sum(n) over () as total
                  from unnest(h) with ordinality as u(n, i)) x
            where total > 0 and cum >= q * total
            order by i limit 1);
comment on function taskd_hist_quantile(bigint[], float8) is 'Estimated q-quantile (0..1) of a duration histogram, in milliseconds: the geometric middle of the bucket that holds it.';

create table history_task_daily (
    day      date not null,
    name     text not null,
    status   text not null check (status in ('FAILED', 'SUCCESSFUL')),
    settled  bigint not null check (settled >= 0),
    total_ms float8 not null,
    max_ms   float8 not null,
    hist     bigint[] not null,
    primary key (day, name, status)
);
comment on table history_task_daily is 'Rollup: tasks settled per UTC day, task name and outcome; kept after the tasks themselves are pruned.';
comment on column history_task_daily.day is 'UTC day the tasks settled.';
comment on column history_task_daily.name is 'Task name.';
comment on column history_task_daily.status is 'SUCCESSFUL or FAILED.';
comment on column history_task_daily.settled is 'How many settlings (a task retried and settled again counts again).';
comment on column history_task_daily.total_ms is 'Sum of the durations from start to settling, in milliseconds.';
comment on column history_task_daily.max_ms is 'Longest duration, in milliseconds.';
comment on column history_task_daily.hist is 'Duration histogram (see taskd_hist_quantile).';

create table history_step_daily (
    day        date not null,
    name       text not null,
    class_name text not null,
    runs       bigint not null check (runs >= 0),
    failed     bigint not null check (failed >= 0),
    total_ms   float8 not null,
    max_ms     float8 not null,
    hist       bigint[] not null,
    primary key (day, name, class_name)
);
comment on table history_step_daily is 'Rollup: step outcomes per UTC day, step name and action, counted when their task settles (the last run of each step since the task last settled; rollback and skip runs are not counted).';
comment on column history_step_daily.day is 'UTC day the step''s run finished.';
comment on column history_step_daily.name is 'Step name.';
comment on column history_step_daily.class_name is 'Action of the step.';
comment on column history_step_daily.runs is 'Outcomes counted.';
comment on column history_step_daily.failed is 'Of which FAILED (cancelled included).';
comment on column history_step_daily.total_ms is 'Sum of run durations, in milliseconds.';
comment on column history_step_daily.max_ms is 'Longest run, in milliseconds.';
comment on column history_step_daily.hist is 'Run duration histogram (see taskd_hist_quantile).';

create table history_failure_daily (
    day          date not null,
    name         text not null,
    error        text not null,
    failures     bigint not null check (failures > 0),
    last_task_id bigint not null,
    primary key (day, name, error)
);
comment on table history_failure_daily is 'Rollup: failed step outcomes per UTC day, step name and error (its first 500 characters).';
comment on column history_failure_daily.day is 'UTC day the run failed.';
comment on column history_failure_daily.name is 'Step name.';
comment on column history_failure_daily.error is 'Why the run failed, as subtask_instance.error (first 500 characters).';
comment on column history_failure_daily.failures is 'How many failed outcomes had this error.';
comment on column history_failure_daily.last_task_id is 'The latest task that failed so (it may have been pruned).';

-- ---------------------------------------------------------------- views

create view task_duration as
    select id, name, status, operation, creator, cluster_id, host_id, server_id,
           create_time, start_time, finish_time, finish_time - start_time as duration
    from task_instance;
comment on view task_duration is 'Each task with how long it ran (null while RUNNING); time windows on create_time or finish_time use their indexes.';

create view task_stats_daily as
    select day, name, status, settled,
           round((total_ms / nullif(settled, 0))::numeric, 1) as mean_ms,
           taskd_hist_quantile(hist, 0.5) as p50_ms,
           taskd_hist_quantile(hist, 0.95) as p95_ms,
           max_ms
    from history_task_daily;
comment on view task_stats_daily is 'Tasks settled per day, name and outcome, with mean, estimated p50/p95 and worst duration in milliseconds.';

create view step_stats_daily as
    select day, name, class_name, runs, failed,
           round(failed::numeric / nullif(runs, 0), 4) as failure_rate,
           round((total_ms / nullif(runs, 0))::numeric, 1) as mean_ms,
           taskd_hist_quantile(hist, 0.5) as p50_ms,
           taskd_hist_quantile(hist, 0.95) as p95_ms,
           max_ms
    from history_step_daily;
comment on view step_stats_daily is 'Per step and day: outcomes, failures, failure rate, mean, estimated p50/p95 and worst run duration in milliseconds.';

create view step_failure_reasons as
    select name, error, sum(failures) as failures, min(day) as first_day, max(day) as last_day,
           max(last_task_id) as last_task_id
    from history_failure_daily group by name, error;
comment on view step_failure_reasons is 'Why steps failed, errors grouped over all kept days; filter history_failure_daily by day for a window.';

-- ---------------------------------------------------------------- the DBAs' role

-- Roles belong to the whole PostgreSQL cluster, so several taskd databases
-- share this one; creating it needs CREATEROLE, and a migrating user without
-- it gets a notice and no role (a DBA may create it, then run the grants
-- below by hand).
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'taskd_history_reader') then
        begin
            create role taskd_history_reader nologin;
        exception
            when duplicate_object or unique_violation then null;
            when insufficient_privilege then
                raise notice 'taskd_history_reader not created: the migrating user lacks CREATEROLE';
        end;
    end if;
    if exists (select 1 from pg_roles where rolname = 'taskd_history_reader') then
        execute 'grant usage on schema public to taskd_history_reader';
        execute 'grant select on task_instance, subtask_instance, subtask_edge, subtask_log, '
             || 'history_task_daily, history_step_daily, history_failure_daily, '
             || 'task_duration, task_stats_daily, step_stats_daily, step_failure_reasons '
             || 'to taskd_history_reader';
    end if;
end
$$;

-- Tasks that had settled before this migration are counted too.
insert into history_rollup_queue (task_id, status, since, settled_at)
    select id, status, null, finish_time from task_instance where status <> 'RUNNING' order by finish_time, id;
update task_instance set last_settled_at = finish_time where status <> 'RUNNING';
