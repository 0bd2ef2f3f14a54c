-- Exclusion between tasks over many targets. A task holds every target key it
-- works on (its servers, its cluster's rollout, its hosts) in task_target;
-- a partial unique index lets at most one RUNNING task hold a key, so two
-- conflicting submits can never both commit, whatever their timing. The
-- rows follow the task's status by trigger, in the same transaction that
-- changes it: settling a task releases its keys, retrying or rolling it
-- back takes them again (and is refused while another task holds one).

create table task_target (
    task_id    bigint not null references task_instance (id) on delete cascade,
    target_key text not null check (target_key <> ''),
    running    boolean not null,
    primary key (task_id, target_key)
);
comment on table task_target is 'The targets each task works on, one row per (task, key); at most one RUNNING task holds a key. Keys: server:<id> (a server operation, or each server of a zone or cluster task), cluster:<id> (a zone or cluster task: two of them on one cluster exclude each other), zone:<cluster id>:<zone name>, hosts:<ids> (an agent batch''s own key), host:<id> (an agent restart, single or in a batch).';
comment on column task_target.task_id is 'The task holding or having held the key.';
comment on column task_target.target_key is 'What is held, e.g. server:7, cluster:2, host:3.';
comment on column task_target.running is 'True while the task is RUNNING (kept by trigger from task_instance.status): the key is held.';

create unique index task_target_one_running_per_key on task_target (target_key) where running;
-- Releasing and re-taking a task's keys looks them up by task (primary key).

insert into task_target (task_id, target_key, running)
select id, target_key, status = 'RUNNING' from task_instance where target_key is not null;

drop index task_instance_one_running_per_target;
comment on column task_instance.target_key is 'Key of the task''s own target (e.g. server:7, host:3, cluster:2, zone:2:zone1); every key the task holds, this one included, is in task_target.';

create function task_target_follow_status() returns trigger
language plpgsql as $$
begin
    update task_target set running = (new.status = 'RUNNING')
    where task_id = new.id and running is distinct from (new.status = 'RUNNING');
    return null;
end
$$;
comment on function task_target_follow_status() is 'Keeps task_target.running equal to the task''s status being RUNNING.';

create trigger task_instance_targets_follow_status
    after update of status on task_instance
    for each row when (old.status is distinct from new.status)
    execute function task_target_follow_status();
