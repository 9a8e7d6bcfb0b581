//! Bearer-token authentication of every `bayspace.v1` call.
//!
//! The [`Authenticator`] interceptor turns the `authorization` header into
//! a [`Caller`] in the request's extensions, or refuses the call with
//! UNAUTHENTICATED. Handlers then state the role they need with
//! [`require_admin`] or [`require_user`] (PERMISSION_DENIED otherwise).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bayspace_connector::limits::AuthThrottle;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::grpc::limits::{AUTH_FAILURES, AUTH_WINDOW};

use bayspace_connector::researchers::{Researchers, token_hash};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node's administrator (the token in `admin.token`): everything.
    Admin,
    /// A researcher added by the administrator: search, contracts, data.
    Researcher,
}

/// Who is calling, as the interceptor established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: Role,
    /// `admin`, or the researcher's id.
    pub id: String,
    pub name: String,
}

#[derive(Clone)]
pub struct Authenticator {
    admin: blake3::Hash,
    researchers: Researchers,
    throttle: Arc<Mutex<AuthThrottle>>,
}

impl Authenticator {
    pub fn new(admin: blake3::Hash, researchers: Researchers) -> Self {
        Authenticator {
            admin,
            researchers,
            throttle: Arc::new(Mutex::new(AuthThrottle::new(AUTH_FAILURES, AUTH_WINDOW))),
        }
    }

    fn throttle(&self) -> std::sync::MutexGuard<'_, AuthThrottle> {
        // The table holds only counters, each update complete on its own,
        // so one left by a panicking thread is still sound.
        self.throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn caller(&self, token: &str) -> Result<Caller, Status> {
        // `Hash` equality is constant time.
        if token_hash(token) == self.admin {
            return Ok(Caller {
                role: Role::Admin,
                id: "admin".into(),
                name: "administrator".into(),
            });
        }
        match self.researchers.authenticate(token) {
            Ok(Some(r)) => Ok(Caller {
                role: Role::Researcher,
                id: r.id,
                name: r.name,
            }),
            Ok(None) => Err(Status::unauthenticated("the bearer token is not valid")),
            Err(e) => {
                tracing::error!("token lookup failed: {e:#}");
                Err(Status::internal("token lookup failed"))
            }
        }
    }
}

/// Why a console sign-in was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("too many failed sign-ins from {ip}; try again in {wait_secs} s")]
    Throttled {
        ip: std::net::IpAddr,
        wait_secs: u64,
    },
    #[error("the token is not valid")]
    BadToken,
    #[error("the token could not be checked")]
    Internal,
}

impl Authenticator {
    /// Checks a token typed into the console's sign-in form, under the same
    /// per-address throttle as the API's bearer tokens, so the form is no
    /// way around it.
    pub fn sign_in(
        &self,
        source: Option<std::net::IpAddr>,
        token: &str,
    ) -> Result<Caller, SignInError> {
        if let Some(ip) = source
            && let Err(wait) = self.throttle().check(ip, Instant::now())
        {
            return Err(SignInError::Throttled {
                ip,
                wait_secs: wait.as_secs().max(1),
            });
        }
        match self.caller(token.trim()) {
            Ok(c) => Ok(c),
            Err(e) if e.code() == tonic::Code::Unauthenticated => {
                if let Some(ip) = source {
                    tracing::warn!(%ip, "failed console sign-in");
                    self.throttle().failed(ip, Instant::now());
                }
                Err(SignInError::BadToken)
            }
            Err(_) => Err(SignInError::Internal),
        }
    }

    /// Whether a signed-in caller still holds their role: a researcher
    /// removed since signing in does not.
    pub fn still_valid(&self, c: &Caller) -> bool {
        match c.role {
            Role::Admin => true,
            Role::Researcher => self
                .researchers
                .list()
                .is_ok_and(|l| l.iter().any(|r| r.id == c.id)),
        }
    }
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let source = req.remote_addr().map(|a| a.ip());
        if let Some(ip) = source
            && let Err(wait) = self.throttle().check(ip, Instant::now())
        {
            return Err(Status::resource_exhausted(format!(
                "too many failed authentications from {ip}; try again in {} s",
                wait.as_secs().max(1)
            )));
        }
        let result = self.authenticate(&mut req);
        if let (Err(e), Some(ip)) = (&result, source)
            && e.code() == tonic::Code::Unauthenticated
        {
            tracing::warn!(%ip, "failed API authentication: {}", e.message());
            self.throttle().failed(ip, Instant::now());
        }
        result.map(|()| req)
    }
}

impl Authenticator {
    fn authenticate(&self, req: &mut Request<()>) -> Result<(), Status> {
        let header = req.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing `authorization: Bearer <token>` metadata")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("the `authorization` metadata must be `Bearer <token>`")
            })?;
        let caller = self.caller(token)?;
        req.extensions_mut().insert(caller);
        Ok(())
    }
}

fn caller<T>(req: &Request<T>) -> Result<&Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::unauthenticated("the call was not authenticated"))
}

/// The caller, if it is the administrator.
pub fn require_admin<T>(req: &Request<T>) -> Result<&Caller, Status> {
    let c = caller(req)?;
    match c.role {
        Role::Admin => Ok(c),
        Role::Researcher => Err(Status::permission_denied(format!(
            "researcher {} may not call this administrator method",
            c.id
        ))),
    }
}

/// The caller, administrator or researcher. Used by the researcher-facing
/// services (catalog, contracts, transfers) that join in `catalog_services`.
#[allow(dead_code)]
pub fn require_user<T>(req: &Request<T>) -> Result<&Caller, Status> {
    caller(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bayspace_connector::store::SledStore;
    use std::sync::Arc;
    use time::OffsetDateTime;

    fn request(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        r
    }

    #[test]
    fn roles_and_refusals() {
        let researchers = Researchers::open(Arc::new(SledStore::temporary().unwrap())).unwrap();
        let (rec, token) = researchers
            .add("Ada", None, OffsetDateTime::now_utc())
            .unwrap();
        let mut auth = Authenticator::new(token_hash("admin-secret"), researchers);

        let admin = auth.call(request(Some("Bearer admin-secret"))).unwrap();
        assert_eq!(require_admin(&admin).unwrap().role, Role::Admin);
        assert_eq!(require_user(&admin).unwrap().id, "admin");

        let user = auth
            .call(request(Some(&format!("Bearer {token}"))))
            .unwrap();
        assert_eq!(require_user(&user).unwrap().id, rec.id);
        assert_eq!(
            require_admin(&user).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );

        for bad in [
            None,
            Some("Bearer wrong"),
            Some("admin-secret"),
            Some("Bearer "),
        ] {
            assert_eq!(
                auth.call(request(bad)).unwrap_err().code(),
                tonic::Code::Unauthenticated,
                "{bad:?}"
            );
        }
        assert_eq!(
            require_user(&Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
