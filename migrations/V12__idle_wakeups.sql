-- Wake-ups that cost no commit throughput while every worker is busy: a
-- worker that finds nothing to claim marks itself idle, and a commit that
-- makes subtasks READY notifies only while some worker is idle.
--
-- Why no wake-up is lost: the idle mark is written under an exclusive
-- advisory lock, and a notifier takes the same lock shared before it reads
-- the marks (a new snapshot, after the lock) and holds it to its commit. A
-- notifier that got the lock first has committed before the mark does, so
-- the worker's claim after marking sees its rows; one that got it after
-- reads the mark and notifies. Polling stays the fallback.

alter table worker add column idle boolean not null default false;
comment on column worker.idle is 'True while this worker has free slots and found nothing to claim: commits that make subtasks READY notify only while some worker is idle.';

create function taskd_mark_idle(worker_id text, is_idle boolean) returns void
language plpgsql volatile as $$
begin
    if is_idle then
        perform pg_advisory_xact_lock(8386118486390171500);
    end if;
    update worker set idle = is_idle where id = worker_id and idle <> is_idle;
end $$;
comment on function taskd_mark_idle(text, boolean) is 'Marks a worker idle (under the wake-up lock, exclusive) or busy.';

-- mode: 'idle' notifies while some worker is idle, 'always' on every call,
-- 'off' never (the workers poll).
create function taskd_wake(mode text) returns void
language plpgsql volatile as $$
begin
    if mode = 'off' then
        return;
    end if;
    if mode = 'idle' then
        perform pg_advisory_xact_lock_shared(8386118486390171500);
        if not exists (select 1 from worker where idle) then
            return;
        end if;
    end if;
    perform pg_notify('taskd_ready', '');
end $$;
comment on function taskd_wake(text) is 'Wakes idle workers when the caller''s transaction commits (see migration V12).';
