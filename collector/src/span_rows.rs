//! The columns of a batch of `spans` rows that the aggregators read (fleet health, service graph),
//! looked up once per batch, and the rules they share: what counts as a failed call and how a call is
//! keyed.

use meshscope_storage::RecordBatch;
use meshscope_storage::arrow::array::{
    Array, AsArray, BinaryArray, Int64Array, StringArray, TimestampNanosecondArray,
};
use meshscope_storage::arrow::datatypes::{Int64Type, TimestampNanosecondType};

use crate::graph::pairing::{CallKey, Peer};

/// Typed views of the span columns the aggregators read.
pub(crate) struct SpanRows<'a> {
    pub(crate) trace_id: &'a BinaryArray,
    pub(crate) span_id: &'a BinaryArray,
    pub(crate) parent: &'a BinaryArray,
    pub(crate) kind: &'a StringArray,
    pub(crate) service: &'a StringArray,
    pub(crate) name: &'a StringArray,
    pub(crate) status: &'a StringArray,
    pub(crate) http: &'a Int64Array,
    pub(crate) duration: &'a Int64Array,
    pub(crate) end: &'a TimestampNanosecondArray,
    pub(crate) peer_service: &'a StringArray,
    pub(crate) db_system: &'a StringArray,
    pub(crate) server_address: &'a StringArray,
    pub(crate) upstream_service: &'a StringArray,
    pub(crate) upstream_endpoint: &'a StringArray,
}

impl<'a> SpanRows<'a> {
    /// The columns of `batch`; `None` if it is not a batch of `spans` rows.
    pub(crate) fn of(batch: &'a RecordBatch) -> Option<SpanRows<'a>> {
        let column = |name: &str| batch.column_by_name(name);
        let text = |name: &str| column(name)?.as_string_opt::<i32>();
        let binary = |name: &str| column(name)?.as_binary_opt::<i32>();
        Some(SpanRows {
            trace_id: binary("trace_id")?,
            span_id: binary("span_id")?,
            parent: binary("parent_span_id")?,
            kind: text("kind")?,
            service: text("service_name")?,
            name: text("name")?,
            status: text("status_code")?,
            http: column("http_response_status_code")?.as_primitive_opt::<Int64Type>()?,
            duration: column("duration_ns")?.as_primitive_opt::<Int64Type>()?,
            end: column("end_time")?.as_primitive_opt::<TimestampNanosecondType>()?,
            peer_service: text("peer_service")?,
            db_system: text("db_system")?,
            server_address: text("server_address")?,
            upstream_service: text("mesh_upstream_service")?,
            upstream_endpoint: text("mesh_upstream_endpoint")?,
        })
    }

    /// `service.name`, if the span's resource has one.
    pub(crate) fn service(&self, row: usize) -> Option<&'a str> {
        self.service.is_valid(row).then(|| self.service.value(row))
    }

    /// A call failed when its status is error or its HTTP status is 5xx.
    pub(crate) fn failed(&self, row: usize) -> bool {
        self.status.value(row) == "error"
            || (self.http.is_valid(row) && self.http.value(row) >= 500)
    }

    /// The call key: the span's own id for a caller, its parent's for a callee (`None` for a root).
    pub(crate) fn key(&self, row: usize, callee: bool) -> Option<CallKey> {
        let trace: [u8; 16] = self.trace_id.value(row).try_into().ok()?;
        let id = if callee {
            if self.parent.is_null(row) {
                return None;
            }
            self.parent.value(row)
        } else {
            self.span_id.value(row)
        };
        Some((trace, id.try_into().ok()?))
    }

    /// The uninstrumented peer a caller names: `peer.service`, else `db.system`, else
    /// `server.address`.
    pub(crate) fn peer(&self, row: usize) -> Option<Peer> {
        let named = |column: &&'a StringArray| {
            (column.is_valid(row) && !column.value(row).is_empty())
                .then(|| column.value(row).to_owned())
        };
        if let Some(name) = named(&self.peer_service) {
            return Some(Peer {
                name,
                kind: "virtual",
            });
        }
        if let Some(name) = named(&self.db_system) {
            return Some(Peer {
                name,
                kind: "database",
            });
        }
        named(&self.server_address).map(|name| Peer {
            name,
            kind: "virtual",
        })
    }
}

impl<'a> SpanRows<'a> {
    /// The upstream service and endpoint a sidecar's CLIENT span names, if both are set.
    pub(crate) fn upstream(&self, row: usize) -> Option<(&'a str, &'a str)> {
        (self.upstream_service.is_valid(row) && self.upstream_endpoint.is_valid(row)).then(|| {
            (
                self.upstream_service.value(row),
                self.upstream_endpoint.value(row),
            )
        })
    }
}
