-- The operator console: browser sessions of taskd's users, and an index that
-- finds the latest tasks of each target (server or host) for the inventory
-- view. A session is what the console's HttpOnly cookie names; any API
-- replica reads it here, so a user signed in through one replica is signed
-- in on all of them.

create table console_session (
    id          bigserial primary key,
    token_hash  bytea not null unique check (length(token_hash) = 32),
    csrf_token  text not null check (length(csrf_token) >= 32),
    user_id     bigint not null references iam_user (id) on delete cascade,
    client_ip   text not null,
    create_time timestamptz not null default now(),
    expires_at  timestamptz not null,
    check (expires_at > create_time)
);
comment on table console_session is 'One row per signed-in console session. Deleted at sign-out, when the user is deleted (foreign key) or its password changes (trigger), and ignored (then purged) once expired.';
comment on column console_session.id is 'Session id (internal; never sent to the browser).';
comment on column console_session.token_hash is 'SHA-256 of the random session token the browser holds in its HttpOnly cookie; the token itself is never stored, so reading this table does not let anyone sign in.';
comment on column console_session.csrf_token is 'Random token the console sends in the X-CSRF-Token header of every state change; a request carrying the cookie but not this token is refused.';
comment on column console_session.user_id is 'The signed-in user; the session goes with the user.';
comment on column console_session.client_ip is 'Address the sign-in came from (for audit).';
comment on column console_session.create_time is 'When the user signed in.';
comment on column console_session.expires_at is 'After this the session is refused and the user must sign in again.';

create index console_session_user_idx on console_session (user_id);
create index console_session_expires_idx on console_session (expires_at);

-- A changed password ends every session of the user, whichever path changed
-- it (REST API, command line, SQL).
create function console_session_revoke_on_password_change() returns trigger
language plpgsql as $$
begin
    delete from console_session where user_id = new.id;
    return new;
end
$$;
comment on function console_session_revoke_on_password_change() is 'Ends the console sessions of a user whose password hash changed.';

create trigger console_session_revoke_on_password_change
    after update of password_hash on iam_user
    for each row when (old.password_hash is distinct from new.password_hash)
    execute function console_session_revoke_on_password_change();

-- The inventory view shows each server's and host's latest tasks.
create index task_instance_target_idx on task_instance (target_key, id) where target_key is not null;
