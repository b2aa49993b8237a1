//! The host firewall: nftables programmed directly over netlink.
