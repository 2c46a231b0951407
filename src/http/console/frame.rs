//! What every signed-in page shows around its content: who is signed in, with which role, until
//! when, the places their role may go, and the sign-out form.

use crate::auth::Permission;
use crate::http::caller::Caller;

pub(super) struct Frame {
    pub name: String,
    pub email: String,
    pub role: &'static str,
    /// When the session ends, in UTC minutes; empty for a request made with an API token.
    pub session_ends: String,
    pub csrf_token: String,
    pub links: Vec<NavLink>,
}

pub(super) struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
    /// This page, or a page under it (`aria-current`).
    pub current: bool,
}

/// The console's places, and what a role needs to see each one in its navigation.
const PLACES: [(&str, &str, Option<Permission>); 5] = [
    ("/", "Home", None),
    (
        "/detections",
        "Detections",
        Some(Permission::ReadDetections),
    ),
    ("/actions", "Actions", Some(Permission::ReadActions)),
    ("/audit", "Audit", Some(Permission::ExportAudit)),
    ("/admin", "Admin", Some(Permission::ManageAnalysts)),
];

impl Frame {
    /// The frame of a page at path `here`, for the analyst `caller` speaks for.
    pub fn of(caller: &Caller, here: &str) -> Option<Frame> {
        let role = caller.analyst.role;
        let links = PLACES
            .iter()
            .filter(|(_, _, needs)| needs.is_none_or(|p| role.allows(p)))
            .map(|&(href, label, _)| NavLink {
                href,
                label,
                current: here == href
                    || (href != "/" && here.strip_prefix(href).is_some_and(|r| r.starts_with('/'))),
            })
            .collect();
        let session = caller.session.as_ref();
        Some(Frame {
            name: caller.analyst.display_name.clone(),
            email: caller.analyst.email.clone(),
            role: role.as_str(),
            session_ends: session.map_or_else(String::new, |s| super::shown(&s.expires_at)),
            csrf_token: session.map_or_else(String::new, |s| s.csrf_token.clone()),
            links,
        })
    }
}
