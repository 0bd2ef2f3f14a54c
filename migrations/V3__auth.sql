-- Authentication and permissions: the users who may call the API, with their
-- argon2id password hashes, and the roles granted to each. A role grant of
-- CLUSTER_MANAGER may be limited to one cluster per row; every other grant
-- applies everywhere. What each role allows is code (taskd::auth::role); the
-- database holds who has which role.

create table iam_user (
    id            bigserial primary key,
    name          text not null unique
                  check (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    password_hash text not null
                  check (password_hash like '$argon2id$%'),
    create_time   timestamptz not null default now(),
    update_time   timestamptz not null default now()
);
comment on table iam_user is 'One row per user of the REST API; callers authenticate with HTTP Basic as one of these users.';
comment on column iam_user.id is 'User id, as shown by the REST API (the {id} of /api/v2/iam/users/{id}).';
comment on column iam_user.name is 'Unique login name: 1 to 64 of letters, digits, ".", "_", "@" and "-", starting with a letter or digit (no ":", which HTTP Basic uses as separator). Recorded as the creator of the tasks the user submits.';
comment on column iam_user.password_hash is 'The password''s argon2id hash in PHC string format ($argon2id$v=19$m=...,t=...,p=...$salt$hash); the password itself is never stored and the hash never leaves the server.';
comment on column iam_user.create_time is 'When the user was created.';
comment on column iam_user.update_time is 'When the password or the roles last changed.';

create table iam_user_role (
    id          bigserial primary key,
    user_id     bigint not null references iam_user (id) on delete cascade,
    role        text not null
                check (role in ('ADMIN', 'CLUSTER_MANAGER', 'HOST_MANAGER', 'TASK_VIEWER', 'TASK_MANAGER')),
    cluster_id  bigint references ob_cluster (id) on delete cascade,
    create_time timestamptz not null default now(),
    -- Only server operations are scoped to clusters.
    check (cluster_id is null or role = 'CLUSTER_MANAGER')
);
comment on table iam_user_role is 'Role grants: one row per role of a user, or, for a CLUSTER_MANAGER limited to some clusters, one row per cluster. A user has at least one grant (enforced by taskd when it writes them).';
comment on column iam_user_role.id is 'Grant id.';
comment on column iam_user_role.user_id is 'The user holding the role; the grant goes with the user.';
comment on column iam_user_role.role is 'ADMIN (everything, including users and the inventory), CLUSTER_MANAGER (restart, start and stop servers), HOST_MANAGER (restart host agents), TASK_VIEWER (read tasks and logs) or TASK_MANAGER (retry, roll back, skip and cancel).';
comment on column iam_user_role.cluster_id is 'For CLUSTER_MANAGER only: the one cluster this row grants; null grants every cluster (a null row wins over cluster rows). Null for every other role.';
comment on column iam_user_role.create_time is 'When the role was granted.';

-- One unscoped grant of a role per user, and one grant per user, role and cluster.
create unique index iam_user_role_unscoped_idx on iam_user_role (user_id, role) where cluster_id is null;
create unique index iam_user_role_cluster_idx on iam_user_role (user_id, role, cluster_id) where cluster_id is not null;
create index iam_user_role_cluster_fk_idx on iam_user_role (cluster_id) where cluster_id is not null;
