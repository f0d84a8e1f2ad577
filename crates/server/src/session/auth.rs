//! Who the client is (the token of its HELLO, failures counted per source) and what it may
//! do.

use std::time::Instant;

use ferry_proto::Code;

use super::{Session, Shared};
use crate::access::{self, Action, Principal, Verdict};
use crate::paths::Refusal;

impl<'a> Session<'a> {
    /// Checks the token of a HELLO against the credentials, counting failures per source;
    /// `false`: denied, the error is queued and the connection ends before anything else.
    /// A credential with a folder confines the rest of the connection to it.
    pub(super) fn authenticate(&mut self, offered: Option<&[u8]>) -> bool {
        let root: &'a Shared = self.shared;
        let (ip, limiter) = (self.peer.ip(), &root.limiter);
        let verdict = match root.access.check(offered) {
            Verdict::Anonymous(p) => Ok((None, p, root)),
            // Checked again here: connections opened before this source reached its limit.
            _ if !limiter.check(ip, Instant::now()) => Err((
                "too many failed attempts from this address",
                "authentication failed",
            )),
            Verdict::User(c, folder) => {
                let space = folder.and_then(|i| root.spaces.get(i)).unwrap_or(root);
                Ok((Some(c.name.clone()), c.permissions, space))
            }
            v => {
                limiter.record_failure(ip, Instant::now());
                // The client knows whether it gave a token: told which, it knows what to mend.
                Err(if matches!(v, Verdict::Missing) {
                    (
                        "no token",
                        "authentication failed (no token given; this server requires one)",
                    )
                } else {
                    ("wrong token", "authentication failed")
                })
            }
        };
        match verdict {
            Ok((user, permissions, space)) => {
                if user.is_some() {
                    limiter.record_success(ip);
                    log::info!(
                        "{}: authenticated as {:?} ({permissions}{})",
                        self.peer,
                        user.as_deref().unwrap_or_default(),
                        if std::ptr::eq(space, root) {
                            String::new()
                        } else {
                            format!(", in {}", space.store.describe())
                        }
                    );
                }
                self.principal = Principal::of(user.as_deref(), permissions, ip);
                self.user = user;
                self.permissions = permissions;
                self.shared = space;
                true
            }
            Err((why, reason)) => {
                root.metrics.auth_failure();
                log::warn!(
                    "{}: authentication failed ({why}); closing before anything is stored",
                    self.peer
                );
                self.d.conn_mut().close_with_error(Code::Denied, reason);
                self.linger = true;
                false
            }
        }
    }

    /// Refuses `action` unless this client's credential (or anonymity) allows it.
    pub(super) fn allow(&self, action: Action) -> Result<(), Refusal> {
        if self.permissions.allows(action) {
            Ok(())
        } else {
            Err(access::denied(action, self.user.as_deref()))
        }
    }
}
