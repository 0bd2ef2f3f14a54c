//! Which server or host a run works on: the one its context names in a
//! single-target task, or, in a step split over many (a zone's servers, a
//! batch's hosts), the list entry its `parallelIdx` points at.

use super::{ActionError, Run};
use crate::dag::rollout::{zone_servers_key, HOST_IDS, ZONE_PARAM};
use crate::model::ocp::OcpContext;

fn parse(what: &str, v: &str) -> Result<i64, ActionError> {
    v.parse()
        .map_err(|_| ActionError::failed(format!("{what} {v:?} is not an id")))
}

/// The zone a step of a multi-server task works on (its className's
/// `zone_id` parameter), if it is one.
pub fn zone_param(run: &Run) -> Result<Option<i64>, ActionError> {
    run.params
        .get(ZONE_PARAM)
        .map(|v| parse("className parameter zone_id", v))
        .transpose()
}

/// Entry `parallelIdx` of a listMap list.
fn entry(run: &Run, key: &str) -> Result<i64, ActionError> {
    let list = run.context.list(key);
    let idx = usize::try_from(run.parallel_idx).ok();
    match idx.and_then(|i| list.get(i)) {
        Some(v) => parse(&format!("listMap {key:?} entry"), v),
        None => Err(ActionError::failed(format!(
            "parallelIdx {} is outside listMap {key:?} ({} entries)",
            run.parallel_idx,
            list.len()
        ))),
    }
}

/// The server of this run.
pub fn server_id(run: &Run) -> Result<i64, ActionError> {
    match zone_param(run)? {
        Some(zone) if run.parallel_idx >= 0 => entry(run, &zone_servers_key(zone)),
        Some(zone) => Err(ActionError::failed(format!(
            "this step of zone {zone} is not split over its servers"
        ))),
        None => OcpContext::server_id(&run.context).map_err(ActionError::failed),
    }
}

/// The host of this run.
pub fn host_id(run: &Run) -> Result<i64, ActionError> {
    if run.parallel_idx >= 0 && !run.context.list(HOST_IDS).is_empty() {
        entry(run, HOST_IDS)
    } else {
        OcpContext::host_id(&run.context).map_err(ActionError::failed)
    }
}
