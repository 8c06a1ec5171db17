//! What an OPC UA sink writes and how: the configured nodes (`column = NodeId`) and method,
//! checked against the inserted columns at compile time, then resolved on the server once
//! connected — each node's DataType and ValueRank, the method's object and InputArguments —
//! into a [`Plan`] whose every column fits its node or argument, or an error naming both.

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use opcua::client::Session;
use opcua::types::{
    Argument, AttributeId, BrowseDescription, BrowseDirection, BrowseResultMask, NodeClass,
    NodeClassMask, NodeId, ReadValueId, ReferenceTypeId, StatusCode, TimestampsToReturn, Variant,
};

use weir_engine::PipelineError;
use weir_engine::parse::Options;

use super::encode::Scalar;
use super::nodes::{self, Listed, NodeSpec};
use super::settings::{ARGUMENTS, METHOD, METHOD_KEY, METHOD_OBJECT, SINK_NODES};
use super::telemetry::count_sink_request;
use crate::columns::{column_index, column_names};

/// Attributes one Read carries at most.
const VALUES_PER_READ: usize = 1000;

/// The nodes and the method a sink writes and calls, as configured.
#[derive(Debug, Clone)]
pub struct WriteSpec {
    /// `column = NodeId` entries.
    pub nodes: Vec<Listed>,
    /// The method called per row.
    pub method: Option<MethodSpec>,
}

/// The method as configured.
#[derive(Debug, Clone)]
pub struct MethodSpec {
    /// The method.
    pub method: NodeSpec,
    /// The object it is called on (`None`: browsed).
    pub object: Option<NodeSpec>,
    /// Argument columns (`None`: every inserted column).
    pub arguments: Option<Vec<String>>,
    /// Columns saying what a call is for.
    pub key: Vec<String>,
}

/// A node as resolved on the server, with its column.
#[derive(Debug, Clone)]
pub struct PlannedNode {
    /// The node.
    pub id: NodeId,
    /// Its DataType.
    pub scalar: Scalar,
    /// The column written to it.
    pub column: usize,
    /// `ns=2;s=Line1.Speed (speed)`, for logs.
    pub label: Arc<str>,
}

/// The method as resolved on the server, with its columns.
#[derive(Debug, Clone)]
pub struct PlannedMethod {
    /// The object it is called on.
    pub object: NodeId,
    /// The method.
    pub method: NodeId,
    /// Per input argument: its column and DataType.
    pub arguments: Vec<(usize, Scalar)>,
    /// The key columns.
    pub key: Vec<usize>,
    /// `object method`, for logs.
    pub label: String,
}

/// What the sink writes, once it knows the server's DataTypes and the inserted columns.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The nodes, in the order of `nodes`.
    pub nodes: Vec<PlannedNode>,
    /// The method.
    pub method: Option<PlannedMethod>,
}

/// Why the sink could not plan its writes.
pub enum PlanError {
    /// The configuration does not fit the server or the columns: the sink cannot run.
    Config(String),
    /// The server did not answer: try again later.
    Unreachable(String),
}

/// A comma-separated column list.
fn column_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether some OPC UA scalar takes columns of type `t`.
fn writable(t: &DataType) -> bool {
    t == &DataType::Boolean
        || t.is_integer()
        || t.is_floating()
        || matches!(
            t,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Timestamp(..)
        )
}

impl WriteSpec {
    /// Reads `nodes`, `method` and the method's options.
    pub fn from_options(o: &Options) -> Result<WriteSpec, PipelineError> {
        let nodes = match o.entry(&SINK_NODES) {
            Some(e) => nodes::parse_list(&e.value).map_err(|m| o.value_error(e, &m))?,
            None => Vec::new(),
        };
        if let Some(l) = nodes.iter().find(|l| l.name == l.spec.to_string()) {
            return Err(o.error(format!(
                "'{}': name the column written to the node ('column = {}')",
                l.name, l.spec
            )));
        }
        let method = match o.entry(&METHOD) {
            Some(e) => Some(MethodSpec {
                method: NodeSpec::parse(&e.value).map_err(|m| o.value_error(e, &m))?,
                object: match o.entry(&METHOD_OBJECT) {
                    Some(e) => Some(NodeSpec::parse(&e.value).map_err(|m| o.value_error(e, &m))?),
                    None => None,
                },
                arguments: o.text(&ARGUMENTS).map(column_list),
                key: o.text(&METHOD_KEY).map(column_list).unwrap_or_default(),
            }),
            None => {
                for option in [&METHOD_OBJECT, &ARGUMENTS, &METHOD_KEY] {
                    if o.is_given(option) {
                        return Err(o.error(format!("{} applies to a 'method'", option.name)));
                    }
                }
                None
            }
        };
        if nodes.is_empty() && method.is_none() {
            return Err(o.error(
                "nothing to write: give 'nodes' (e.g. 'setpoint = ns=2;s=Line1.Setpoint') or a 'method'",
            ));
        }
        Ok(WriteSpec { nodes, method })
    }

    /// The method's argument columns among `schema`'s.
    fn argument_columns(&self, m: &MethodSpec, schema: &SchemaRef) -> Vec<String> {
        m.arguments.clone().unwrap_or_else(|| {
            schema
                .fields()
                .iter()
                .map(|f| f.name().to_string())
                .collect()
        })
    }

    /// Checks that every column the sink writes is inserted, with a type it can write.
    pub fn check(&self, schema: &SchemaRef) -> Result<(), String> {
        let mut wanted: Vec<(&str, String)> = self
            .nodes
            .iter()
            .map(|l| ("nodes", l.name.clone()))
            .collect();
        if let Some(m) = &self.method {
            wanted.extend(
                self.argument_columns(m, schema)
                    .into_iter()
                    .map(|c| ("arguments", c)),
            );
            wanted.extend(m.key.iter().map(|c| ("method_key", c.clone())));
        }
        for (option, c) in wanted {
            let i = column_index(schema, &c).ok_or_else(|| {
                format!(
                    "{option} names '{c}', which is not among the inserted columns ({})",
                    column_names(schema)
                )
            })?;
            let t = schema.field(i).data_type();
            if option != "method_key" && !writable(t) {
                return Err(format!(
                    "column '{c}' is {t}: an OPC UA sink writes booleans, numbers, text and timestamps"
                ));
            }
        }
        Ok(())
    }
    /// Reads each node's DataType and ValueRank and the method's InputArguments, and checks
    /// them against the columns.
    pub async fn resolve(
        &self,
        session: &Session,
        schema: &SchemaRef,
        sink: &str,
    ) -> Result<Plan, PlanError> {
        let unreachable = |e: opcua::types::Error| PlanError::Unreachable(e.to_string());
        self.check(schema).map_err(PlanError::Config)?;
        let uses_uri = self.nodes.iter().map(|l| &l.spec).chain(
            self.method
                .iter()
                .flat_map(|m| std::iter::once(&m.method).chain(m.object.as_ref())),
        );
        let namespaces = if uses_uri
            .into_iter()
            .any(|s| matches!(s, NodeSpec::Uri { .. }))
        {
            count_sink_request(sink, "Read");
            nodes::namespaces(session)
                .await
                .map_err(PlanError::Unreachable)?
        } else {
            Vec::new()
        };
        let id_of = |spec: &NodeSpec| resolve_id(spec, &namespaces);
        let mut planned = Vec::new();
        for l in &self.nodes {
            let id = id_of(&l.spec)?;
            let column = column_index(schema, &l.name).unwrap_or_default();
            planned.push((l, id, column));
        }
        let reads: Vec<ReadValueId> = planned
            .iter()
            .flat_map(|(_, id, _)| {
                [AttributeId::DataType, AttributeId::ValueRank].map(|a| ReadValueId {
                    node_id: id.clone(),
                    attribute_id: a as u32,
                    ..Default::default()
                })
            })
            .collect();
        let mut answers = Vec::new();
        for chunk in reads.chunks(VALUES_PER_READ) {
            count_sink_request(sink, "Read");
            answers.extend(
                session
                    .read(chunk, TimestampsToReturn::Neither, 0.0)
                    .await
                    .map_err(unreachable)?,
            );
        }
        let mut nodes = Vec::new();
        for ((l, id, column), attrs) in planned.into_iter().zip(answers.chunks(2)) {
            let t = schema.field(column).data_type();
            let data_type = match attrs.first().and_then(|a| a.value.clone()) {
                Some(Variant::NodeId(n)) => *n,
                _ => {
                    let status = attrs
                        .first()
                        .and_then(|a| a.status)
                        .unwrap_or(StatusCode::BadNoData);
                    return Err(PlanError::Config(format!(
                        "node {id} (column '{}'): its DataType cannot be read ({})",
                        l.name,
                        status.sub_code().name()
                    )));
                }
            };
            let scalar = Scalar::of(&data_type).ok_or_else(|| {
                PlanError::Config(format!(
                    "node {id} (column '{}') has DataType {data_type}: the sink writes Boolean, SByte to UInt64, Float, Double, String and DateTime nodes",
                    l.name
                ))
            })?;
            if let Some(Variant::Int32(rank)) = attrs.get(1).and_then(|a| a.value.clone())
                && rank > 0
            {
                return Err(PlanError::Config(format!(
                    "node {id} (column '{}') holds an array (ValueRank {rank}): the sink writes scalars",
                    l.name
                )));
            }
            if !scalar.accepts(t) {
                return Err(PlanError::Config(format!(
                    "column '{}' is {t} but node {id} has DataType {scalar:?}: they do not fit (cast the column in the query, e.g. CAST(x AS {}))",
                    l.name,
                    sql_type(scalar)
                )));
            }
            nodes.push(PlannedNode {
                label: format!("{id} ({})", l.name).into(),
                id,
                scalar,
                column,
            });
        }
        let method = match &self.method {
            Some(m) => Some(
                self.resolve_method(session, schema, m, &namespaces, sink)
                    .await?,
            ),
            None => None,
        };
        Ok(Plan { nodes, method })
    }

    /// The method's object (given or browsed) and its input arguments, checked against the
    /// argument columns.
    async fn resolve_method(
        &self,
        session: &Session,
        schema: &SchemaRef,
        m: &MethodSpec,
        namespaces: &[String],
        sink: &str,
    ) -> Result<PlannedMethod, PlanError> {
        let method = resolve_id(&m.method, namespaces)?;
        let object = match &m.object {
            Some(o) => resolve_id(o, namespaces)?,
            None => {
                let parents = self
                    .references(
                        session,
                        sink,
                        &method,
                        BrowseDirection::Inverse,
                        ReferenceTypeId::HasComponent,
                    )
                    .await?;
                parents
                    .into_iter()
                    .find(|(_, class, _)| *class == NodeClass::Object)
                    .map(|(id, _, _)| id)
                    .ok_or_else(|| {
                        PlanError::Config(format!(
                            "method {method}: no object has it as a component (is it a method?); give method_object"
                        ))
                    })?
            }
        };
        let properties = self
            .references(
                session,
                sink,
                &method,
                BrowseDirection::Forward,
                ReferenceTypeId::HasProperty,
            )
            .await?;
        let declared: Vec<Argument> = match properties
            .into_iter()
            .find(|(_, _, name)| name == "InputArguments")
        {
            None => Vec::new(),
            Some((id, ..)) => {
                count_sink_request(sink, "Read");
                let v = session
                    .read(&[ReadValueId::from(id)], TimestampsToReturn::Neither, 0.0)
                    .await
                    .map_err(|e| PlanError::Unreachable(e.to_string()))?;
                match v.into_iter().next().and_then(|d| d.value) {
                    Some(Variant::Array(a)) => a
                        .values
                        .into_iter()
                        .filter_map(|v| match v {
                            Variant::ExtensionObject(o) => {
                                o.into_inner_as::<Argument>().map(|a| *a)
                            }
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                }
            }
        };
        let columns = self.argument_columns(m, schema);
        let described = || {
            declared
                .iter()
                .map(|a| format!("{}: {}", a.name, a.data_type))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if declared.len() != columns.len() {
            return Err(PlanError::Config(format!(
                "method {method} takes {} input arguments ({}) but 'arguments' gives {} columns ({})",
                declared.len(),
                described(),
                columns.len(),
                columns.join(", ")
            )));
        }
        let mut arguments = Vec::new();
        for (a, c) in declared.iter().zip(&columns) {
            let i = column_index(schema, c).unwrap_or_default();
            let t = schema.field(i).data_type();
            let scalar = Scalar::of(&a.data_type).filter(|_| a.value_rank <= 0).ok_or_else(|| {
                PlanError::Config(format!(
                    "method {method}: input argument '{}' is {} (ValueRank {}), which the sink does not pass",
                    a.name, a.data_type, a.value_rank
                ))
            })?;
            if !scalar.accepts(t) {
                return Err(PlanError::Config(format!(
                    "column '{c}' is {t} but input argument '{}' of method {method} is {scalar:?}: they do not fit (cast the column, e.g. CAST({c} AS {}))",
                    a.name,
                    sql_type(scalar)
                )));
            }
            arguments.push((i, scalar));
        }
        Ok(PlannedMethod {
            label: format!("{object} {method}"),
            object,
            method,
            arguments,
            key: m
                .key
                .iter()
                .map(|c| column_index(schema, c).unwrap_or_default())
                .collect(),
        })
    }

    /// `node`'s references of `kind` in `direction`: target id, node class, browse name.
    async fn references(
        &self,
        session: &Session,
        sink: &str,
        node: &NodeId,
        direction: BrowseDirection,
        kind: ReferenceTypeId,
    ) -> Result<Vec<(NodeId, NodeClass, String)>, PlanError> {
        count_sink_request(sink, "Browse");
        let results = session
            .browse(
                &[BrowseDescription {
                    node_id: node.clone(),
                    browse_direction: direction,
                    reference_type_id: kind.into(),
                    include_subtypes: true,
                    node_class_mask: (NodeClassMask::OBJECT | NodeClassMask::VARIABLE).bits(),
                    result_mask: BrowseResultMask::All as u32,
                }],
                0,
                None,
            )
            .await
            .map_err(|e| PlanError::Unreachable(e.to_string()))?;
        let result = results.into_iter().next();
        if let Some(r) = &result
            && r.status_code.is_bad()
        {
            return Err(PlanError::Config(format!(
                "browsing {node}: {}",
                r.status_code.sub_code().name()
            )));
        }
        Ok(result
            .and_then(|r| r.references)
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                (
                    r.node_id.node_id,
                    r.node_class,
                    r.browse_name.name.as_ref().to_string(),
                )
            })
            .collect())
    }
}

/// The NodeId of `spec` on a server with these namespaces.
fn resolve_id(spec: &NodeSpec, namespaces: &[String]) -> Result<NodeId, PlanError> {
    spec.resolve(namespaces)
        .ok_or_else(|| PlanError::Config(format!("{spec}: the server has no such namespace")))
}

/// The SQL type to cast a column to for a DataType.
fn sql_type(s: Scalar) -> &'static str {
    match s {
        Scalar::Boolean => "BOOLEAN",
        Scalar::SByte => "TINYINT",
        Scalar::Byte => "TINYINT UNSIGNED",
        Scalar::Int16 => "SMALLINT",
        Scalar::UInt16 => "SMALLINT UNSIGNED",
        Scalar::Int32 => "INT",
        Scalar::UInt32 => "INT UNSIGNED",
        Scalar::Int64 => "BIGINT",
        Scalar::UInt64 => "BIGINT UNSIGNED",
        Scalar::Float => "REAL",
        Scalar::Double => "DOUBLE",
        Scalar::String => "VARCHAR",
        Scalar::DateTime => "TIMESTAMP",
    }
}
