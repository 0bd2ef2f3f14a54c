-- Per-finish work independent of a task's size: each task keeps the count
-- of its active subtasks, runnable PENDING rows have an index of their own,
-- and a subtask waiting for its rollback turn is marked so.

alter table task_instance
    add column active integer not null default 0 check (active >= 0);
comment on column task_instance.active is 'How many of this task''s subtasks are READY, RUNNING or CANCELING now; kept exact by the statement trigger subtask_instance_active_*, so a finish reads the free slots instead of counting every subtask.';

update task_instance t set active = a.n
from (select task_id, count(*)::int as n from subtask_instance
      where status in ('READY', 'RUNNING', 'CANCELING') group by task_id) a
where t.id = a.task_id;

alter table subtask_instance
    add column rollback_queued boolean not null default false;
comment on column subtask_instance.rollback_queued is 'During a rollback: every downstream is rolled back and this subtask waits for a free concurrency slot to roll back itself (it becomes READY, and this false, when it gets one).';

-- The waiting subtasks a finish may promote, in series order: a finish
-- reads as many of them as it has free slots, never all of a task's rows.
create index subtask_instance_runnable_idx on subtask_instance (task_id, series_id)
    where status = 'PENDING' and pending_upstreams = 0 and operation in ('EXECUTE', 'RETRY');
-- The same for rollback turns, in reverse series order.
create index subtask_instance_rollback_queued_idx on subtask_instance (task_id, series_id)
    where rollback_queued;

-- The count follows every statement that writes subtask rows, by the
-- difference between each row's old and new version (transition tables):
-- exact whatever the statement, and one update per task per statement, only
-- when its count changed.
create function subtask_instance_active_upd() returns trigger
language plpgsql as $$
begin
    update task_instance t set active = t.active + d.delta
    from (select coalesce(n.task_id, o.task_id) as task_id,
                 sum((n.status in ('READY', 'RUNNING', 'CANCELING'))::int
                     - (o.status in ('READY', 'RUNNING', 'CANCELING'))::int) as delta
          from new_rows n join old_rows o on o.id = n.id
          where n.status <> o.status
          group by 1) d
    where t.id = d.task_id and d.delta <> 0;
    return null;
end $$;

create function subtask_instance_active_ins() returns trigger
language plpgsql as $$
begin
    update task_instance t set active = t.active + d.delta
    from (select task_id, count(*)::int as delta from new_rows
          where status in ('READY', 'RUNNING', 'CANCELING') group by task_id) d
    where t.id = d.task_id;
    return null;
end $$;

-- Deletes: a row trigger, fired only for active rows (none, in practice:
-- retention removes finished tasks), so pruning copies nothing.
create function subtask_instance_active_del() returns trigger
language plpgsql as $$
begin
    update task_instance set active = active - 1 where id = old.task_id;
    return null;
end $$;

create trigger subtask_instance_active_upd after update on subtask_instance
    referencing old table as old_rows new table as new_rows
    for each statement execute function subtask_instance_active_upd();
create trigger subtask_instance_active_ins after insert on subtask_instance
    referencing new table as new_rows
    for each statement execute function subtask_instance_active_ins();
create trigger subtask_instance_active_del after delete on subtask_instance
    for each row when (old.status in ('READY', 'RUNNING', 'CANCELING'))
    execute function subtask_instance_active_del();
