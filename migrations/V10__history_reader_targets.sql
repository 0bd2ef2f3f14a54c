-- The DBAs' role reads which targets each task holds (task_target, V9), like
-- the rest of the history. It never reads console sessions (V7) or users.
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'taskd_history_reader') then
        execute 'grant select on task_target to taskd_history_reader';
    end if;
end
$$;
