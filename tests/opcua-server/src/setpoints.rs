//! The plant's writable side: a setpoint variable per scalar OPC UA type, one the server
//! refuses to write (`BadNotWritable`), one only a logged-in user may write
//! (`BadUserAccessDenied` for anonymous sessions), and a method `Plant.Derate(Machine:
//! String, Percent: Double, Reason: String)`. Every write and call that the server accepted is recorded in
//! a [`WriteLog`] that tests read from their own thread.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use opcua::server::address_space::{AccessLevel, AddressSpace, MethodBuilder, Variable};
use opcua::server::authenticator::{AuthManager, DefaultAuthenticator, Password, UserToken};
use opcua::server::node_manager::memory::SimpleNodeManagerImpl;
use opcua::server::{ServerEndpoint, ServerUserToken};
use opcua::types::{
    ByteString, DataTypeId, DataValue, DateTime, Error, NodeId, StatusCode, UserTokenPolicy,
    Variant,
};

/// The setpoints, one per scalar type, by browse name (`Setpoints.<name>`), and the
/// DataType each has.
pub const SETPOINTS: [(&str, DataTypeId); 13] = [
    ("Boolean", DataTypeId::Boolean),
    ("SByte", DataTypeId::SByte),
    ("Byte", DataTypeId::Byte),
    ("Int16", DataTypeId::Int16),
    ("UInt16", DataTypeId::UInt16),
    ("Int32", DataTypeId::Int32),
    ("UInt32", DataTypeId::UInt32),
    ("Int64", DataTypeId::Int64),
    ("UInt64", DataTypeId::UInt64),
    ("Float", DataTypeId::Float),
    ("Double", DataTypeId::Double),
    ("String", DataTypeId::String),
    ("DateTime", DataTypeId::DateTime),
];

/// A Double setpoint whose AccessLevel has no write: the server answers `BadNotWritable`.
pub const READ_ONLY: &str = "ReadOnly";
/// A Double setpoint the server clamps to at most 100 (as a PLC program limiting a request):
/// a write of more is accepted, and reading back shows 100.
pub const CLAMPED: &str = "Clamped";
/// A Double setpoint that anonymous sessions may not write (`BadUserAccessDenied`).
pub const OPERATOR_ONLY: &str = "OperatorOnly";
/// The method, a component of the `Plant` folder.
pub const DERATE: &str = "Plant.Derate";

/// What clients wrote and called, as the server took it.
#[derive(Debug, Default)]
pub struct WriteLog {
    values: Mutex<HashMap<String, Variant>>,
    writes: Mutex<Vec<(String, Variant)>>,
    calls: Mutex<Vec<Vec<Variant>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl WriteLog {
    /// Every accepted write, in order: setpoint name and value.
    pub fn writes(&self) -> Vec<(String, Variant)> {
        lock(&self.writes).clone()
    }

    /// Every accepted call of [`DERATE`], in order: its input arguments.
    pub fn calls(&self) -> Vec<Vec<Variant>> {
        lock(&self.calls).clone()
    }

    /// The current value of a setpoint.
    pub fn value(&self, name: &str) -> Option<Variant> {
        lock(&self.values).get(name).cloned()
    }
}

fn initial(t: DataTypeId) -> Variant {
    match t {
        DataTypeId::Boolean => Variant::Boolean(false),
        DataTypeId::SByte => Variant::SByte(0),
        DataTypeId::Byte => Variant::Byte(0),
        DataTypeId::Int16 => Variant::Int16(0),
        DataTypeId::UInt16 => Variant::UInt16(0),
        DataTypeId::Int32 => Variant::Int32(0),
        DataTypeId::UInt32 => Variant::UInt32(0),
        DataTypeId::Int64 => Variant::Int64(0),
        DataTypeId::UInt64 => Variant::UInt64(0),
        DataTypeId::Float => Variant::Float(0.0),
        DataTypeId::String => Variant::from(""),
        DataTypeId::DateTime => Variant::from(DateTime::null()),
        _ => Variant::Double(0.0),
    }
}

/// Adds the setpoints (under `folder`) and the method (a component of `plant`) to the
/// address space and their callbacks to the node manager.
pub fn add(
    space: &mut AddressSpace,
    manager: &SimpleNodeManagerImpl,
    ns: u16,
    (plant, folder): (&NodeId, &NodeId),
    log: &Arc<WriteLog>,
) {
    let all = SETPOINTS.iter().copied().chain([
        (READ_ONLY, DataTypeId::Double),
        (OPERATOR_ONLY, DataTypeId::Double),
        (CLAMPED, DataTypeId::Double),
    ]);
    let rw = AccessLevel::CURRENT_READ | AccessLevel::CURRENT_WRITE;
    for (name, t) in all {
        let id = NodeId::new(ns, format!("Setpoints.{name}"));
        let value = initial(t);
        lock(&log.values).insert(name.to_string(), value.clone());
        let mut var = Variable::new_data_value(&id, name, name, t, None, None, value);
        // the read-only setpoint lets the server's access check through to its callback,
        // which answers as the specification says a variable without write access does
        var.set_access_level(if name == READ_ONLY {
            AccessLevel::CURRENT_READ
        } else {
            rw
        });
        var.set_user_access_level(rw);
        space.add_variables(vec![var], folder);
        let (name, writes) = (name.to_string(), Arc::clone(log));
        manager.add_write_callback(id.clone(), move |dv, _range| {
            if name == READ_ONLY {
                return StatusCode::BadNotWritable;
            }
            let Some(v) = dv.value else {
                return StatusCode::BadNothingToDo;
            };
            let held = match v {
                Variant::Double(x) if name == CLAMPED => Variant::Double(x.min(100.0)),
                ref v => v.clone(),
            };
            lock(&writes.values).insert(name.clone(), held);
            lock(&writes.writes).push((name.clone(), v));
            StatusCode::Good
        });
        let (name, reads) = (id.to_string(), Arc::clone(log));
        let key = name
            .trim_start_matches(&format!("ns={ns};s=Setpoints."))
            .to_string();
        manager.add_read_callback(id, move |_range, _ts, _age| {
            let v = lock(&reads.values).get(&key).cloned().unwrap_or_default();
            Ok(DataValue::new_now(v))
        });
    }
    let method = NodeId::new(ns, DERATE);
    MethodBuilder::new(&method, "Derate", "Derate")
        .component_of(plant.clone())
        .input_args(
            space,
            &NodeId::new(ns, format!("{DERATE}.InputArguments")),
            &[
                ("Machine", DataTypeId::String).into(),
                ("Percent", DataTypeId::Double).into(),
                ("Reason", DataTypeId::String).into(),
            ],
        )
        .executable(true)
        .user_executable(true)
        .insert(space);
    let calls = Arc::clone(log);
    manager.add_method_callback(method, move |args| match args {
        [Variant::String(_), Variant::Double(_), Variant::String(_)] => {
            lock(&calls.calls).push(args.to_vec());
            Ok(Vec::new())
        }
        [_, _, _] => Err(StatusCode::BadTypeMismatch),
        _ => Err(StatusCode::BadArgumentsMissing),
    });
}

/// The server's users (as configured), except that anonymous sessions may not write
/// [`OPERATOR_ONLY`].
pub struct PlantAuth {
    users: DefaultAuthenticator,
    operator_only: NodeId,
}

impl PlantAuth {
    /// Over the server's users, in namespace `ns`.
    pub fn new(users: BTreeMap<String, ServerUserToken>, ns: u16) -> PlantAuth {
        PlantAuth {
            users: DefaultAuthenticator::new(users),
            operator_only: NodeId::new(ns, format!("Setpoints.{OPERATOR_ONLY}")),
        }
    }
}

#[async_trait::async_trait]
impl AuthManager for PlantAuth {
    async fn authenticate_anonymous_token(&self, endpoint: &ServerEndpoint) -> Result<(), Error> {
        self.users.authenticate_anonymous_token(endpoint).await
    }

    async fn authenticate_username_identity_token(
        &self,
        endpoint: &ServerEndpoint,
        username: &str,
        password: &Password,
    ) -> Result<UserToken, Error> {
        self.users
            .authenticate_username_identity_token(endpoint, username, password)
            .await
    }

    async fn authenticate_x509_identity_token(
        &self,
        endpoint: &ServerEndpoint,
        signing_thumbprint: &opcua::crypto::Thumbprint,
    ) -> Result<UserToken, Error> {
        self.users
            .authenticate_x509_identity_token(endpoint, signing_thumbprint)
            .await
    }

    async fn authenticate_issued_identity_token(
        &self,
        endpoint: &ServerEndpoint,
        token: &ByteString,
    ) -> Result<UserToken, Error> {
        self.users
            .authenticate_issued_identity_token(endpoint, token)
            .await
    }

    fn effective_user_access_level(
        &self,
        token: &UserToken,
        user_access_level: AccessLevel,
        node_id: &NodeId,
    ) -> AccessLevel {
        if token.is_anonymous() && node_id == &self.operator_only {
            user_access_level - AccessLevel::CURRENT_WRITE
        } else {
            user_access_level
        }
    }

    fn user_token_policies(&self, endpoint: &ServerEndpoint) -> Vec<UserTokenPolicy> {
        self.users.user_token_policies(endpoint)
    }
}
