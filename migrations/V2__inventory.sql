-- The inventory: hosts with their agents, OceanBase clusters, zones and servers.
-- Operations read it to build a task's context and guard its target; actions
-- update the statuses as they go.

create table host (
    id           bigserial primary key,
    name         text not null unique check (name <> ''),
    ip           text not null check (ip <> ''),
    agent_url    text not null check (agent_url ~ '^https?://[^/]+'),
    agent_status text not null default 'UNKNOWN'
                 check (agent_status in ('ONLINE', 'OFFLINE', 'RESTARTING', 'UNKNOWN')),
    create_time  timestamptz not null default now(),
    update_time  timestamptz not null default now()
);
comment on table host is 'One row per machine that runs OceanBase servers; each host runs an agent that taskd drives over HTTP.';
comment on column host.id is 'Host id, as shown by the REST API (hostId).';
comment on column host.name is 'Unique human name of the host (often its host name).';
comment on column host.ip is 'IP address of the host; several hosts may share one in test and demo set-ups.';
comment on column host.agent_url is 'Base URL of the host''s agent, e.g. http://10.0.0.5:62888; every agent call is relative to it.';
comment on column host.agent_status is 'Last known state of the agent: ONLINE, OFFLINE, RESTARTING (an agent restart task is running) or UNKNOWN (never checked).';
comment on column host.create_time is 'When the host was added to the inventory.';
comment on column host.update_time is 'When the row last changed.';

create table ob_cluster (
    id            bigserial primary key,
    name          text not null unique check (name <> ''),
    ob_cluster_id bigint not null check (ob_cluster_id > 0),
    status        text not null default 'RUNNING'
                  check (status in ('RUNNING', 'CREATING', 'OPERATING', 'STOPPED', 'ABNORMAL', 'DELETING')),
    create_time   timestamptz not null default now(),
    update_time   timestamptz not null default now()
);
comment on table ob_cluster is 'One row per OceanBase cluster managed by taskd.';
comment on column ob_cluster.id is 'Cluster id, as shown by the REST API (clusterId, the {id} of /api/v2/ob/clusters/{id}).';
comment on column ob_cluster.name is 'Unique cluster name, e.g. "protoss"; written into task contexts as cluster_name.';
comment on column ob_cluster.ob_cluster_id is 'The cluster id OceanBase itself knows (obClusterId); not unique across primary and standby clusters.';
comment on column ob_cluster.status is 'RUNNING, CREATING, OPERATING (a task is changing it), STOPPED, ABNORMAL or DELETING.';
comment on column ob_cluster.create_time is 'When the cluster was added to the inventory.';
comment on column ob_cluster.update_time is 'When the row last changed.';

create table ob_zone (
    id          bigserial primary key,
    cluster_id  bigint not null references ob_cluster (id),
    name        text not null check (name <> ''),
    status      text not null default 'RUNNING'
                check (status in ('RUNNING', 'OPERATING', 'STOPPED')),
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    unique (cluster_id, name),
    -- Target of ob_server's composite key, so a server's zone is in its cluster.
    unique (id, cluster_id)
);
comment on table ob_zone is 'One row per zone of an OceanBase cluster.';
comment on column ob_zone.id is 'Zone id.';
comment on column ob_zone.cluster_id is 'The cluster the zone belongs to.';
comment on column ob_zone.name is 'Zone name, unique within its cluster, e.g. "zone1".';
comment on column ob_zone.status is 'RUNNING, OPERATING (a task is changing one of its servers) or STOPPED.';
comment on column ob_zone.create_time is 'When the zone was added to the inventory.';
comment on column ob_zone.update_time is 'When the row last changed.';
create index ob_zone_cluster_idx on ob_zone (cluster_id);

create table ob_server (
    id          bigserial primary key,
    cluster_id  bigint not null references ob_cluster (id),
    zone_id     bigint not null,
    host_id     bigint not null references host (id),
    ip          text not null check (ip <> ''),
    sql_port    integer not null default 2881 check (sql_port between 1 and 65535),
    rpc_port    integer not null default 2882 check (rpc_port between 1 and 65535),
    status      text not null default 'RUNNING'
                check (status in ('RUNNING', 'STARTING', 'STOPPING', 'STOPPED', 'RESTARTING', 'ABNORMAL')),
    create_time timestamptz not null default now(),
    update_time timestamptz not null default now(),
    check (sql_port <> rpc_port),
    foreign key (zone_id, cluster_id) references ob_zone (id, cluster_id),
    unique (host_id, sql_port),
    unique (host_id, rpc_port)
);
comment on table ob_server is 'One row per OBServer process: a member of a zone of a cluster, running on a host.';
comment on column ob_server.id is 'Server id, as shown by the REST API (the {serverId} of the server operations).';
comment on column ob_server.cluster_id is 'The cluster the server belongs to; equal to its zone''s cluster (enforced by the composite foreign key).';
comment on column ob_server.zone_id is 'The zone the server belongs to.';
comment on column ob_server.host_id is 'The host the server process runs on; its agent starts and stops the process.';
comment on column ob_server.ip is 'IP address the server listens on (the host''s, unless given).';
comment on column ob_server.sql_port is 'SQL port (2881 by default); unique per host.';
comment on column ob_server.rpc_port is 'RPC port (2882 by default); unique per host.';
comment on column ob_server.status is 'RUNNING, STARTING, STOPPING, STOPPED, RESTARTING (an operation task is changing it) or ABNORMAL.';
comment on column ob_server.create_time is 'When the server was added to the inventory.';
comment on column ob_server.update_time is 'When the row last changed.';
create index ob_server_cluster_idx on ob_server (cluster_id);
create index ob_server_zone_idx on ob_server (zone_id);
