//! The minimal tc hook behind the steering modes: an ingress qdisc with one u32
//! match-all filter whose mirred action redirects every frame to the other port.
//! Only sch_ingress, cls_u32 and act_mirred are needed (no clsact, flower,
//! matchall or gact).

use super::SteerError;
use super::netlink::Netlink;
use rtnetlink::packet_route::tc::TcHandle;
use std::io;

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == errno)
}

fn tc_err(what: &'static str, ifindex: i32, e: rtnetlink::Error) -> SteerError {
    SteerError::Link {
        what,
        port: format!("ifindex {ifindex}"),
        source: io::Error::other(e.to_string()),
    }
}

impl Netlink {
    /// Kernel path on: every frame arriving on `from` leaves by `to`.
    pub fn redirect(&self, from: i32, to: i32) -> Result<(), SteerError> {
        let h = self.handle();
        self.block_on(async {
            match h.qdisc().add(from).ingress().execute().await {
                Ok(()) => {}
                Err(e) if is_errno(&e, libc::EEXIST) => {}
                Err(e) => return Err(tc_err("add ingress qdisc on", from, e)),
            }
            let req = h
                .traffic_filter(from)
                .replace()
                .ingress()
                .priority(1)
                .protocol((libc::ETH_P_ALL as u16).to_be())
                .redirect(to as u32)
                .map_err(|e| tc_err("build redirect on", from, e))?;
            req.execute()
                .await
                .map_err(|e| tc_err("add redirect on", from, e))
        })
    }

    /// Kernel path off: removes the ingress qdisc (and its filters) from `dev`.
    pub fn clear_ingress(&self, dev: i32) -> Result<(), SteerError> {
        let h = self.handle();
        self.block_on(async {
            let mut req = h.qdisc().del(dev);
            req.message_mut().header.parent = TcHandle::INGRESS;
            req.message_mut().header.handle = TcHandle::from(0xffff_0000);
            match req.execute().await {
                Ok(()) => Ok(()),
                Err(e) if is_errno(&e, libc::ENOENT) || is_errno(&e, libc::EINVAL) => Ok(()),
                Err(e) => Err(tc_err("remove ingress qdisc from", dev, e)),
            }
        })
    }
}
