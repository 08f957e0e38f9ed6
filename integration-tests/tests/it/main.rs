//! End-to-end tests against real controller processes. Files are named by tier.

mod t05_operator;
mod t10_cluster;
mod t12_health;
mod t15_cli;
mod t16_etcd_bench;
mod t20_failover;
mod t30_catchup;
mod t35_restore;
mod t38_rolling_restart;
mod t40_watch;
mod t50_security;
mod t55_python;
mod t56_pki_cli;
mod t60_policy;
mod t61_policy_apply;
mod t62_desired_state;
mod t63_policy_rollback;
mod t64_fleet_status;
mod t65_rollout;
mod t70_netlab;
mod t75_agent_firewall;
mod t80_monitors;
mod t90_demo;
mod t95_packaging;
mod t96_helm;
