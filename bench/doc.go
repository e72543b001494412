// Package bench measures Rivet against reference tools and published figures, for
// rivet-bench (bench/cmd/rivet-bench) and the integration tests that run a bench small.
// Every bench prints "rivet-figure:" lines and returns its figures; none passes a verdict
// (a test that runs one judges what it returns). BENCHMARKS.md records the results.
//
// Each bench and its reference:
//
//   - Store: committed writes/s and commit latency of real machine registrations through
//     Rivet's HTTPS API with 1 and 3 coordinators, against a 3-member etcd taking puts of
//     the same bytes (over HTTPS with Rivet's client transport, and over plain HTTP).
//   - Image: Rivet's image step (stream, decompress, verify, write, fsync) onto a loop
//     device, against `curl | zstd -d | dd oflag=direct` onto the same device.
//   - TFTP, DHCP, HTTP (`rivet-bench boot`): Rivet's boot services against Debian's
//     tftpd-hpa, dnsmasq in proxyDHCP mode and nginx with sendfile, with the same client
//     and workload.
//   - Status: the fleet page's server time at 10,000 machines against the 200 ms p95 goal,
//     and the machine updates per second the event stream delivers to connected clients.
//   - Fleet: simulated machines (package fleetsim, with the agent's step runner, Serf
//     member and due rule) provisioned through a real coordinator cluster
//     (coordinatortest.Cluster), optionally with a leader kill, a partition or a restart
//     of every coordinator; compared with Digital Rebar's published memory and
//     transaction figures and the project's goals (ready within 5 minutes, 500 MB at
//     10,000 machines, Serf converged within 5 s), and reporting what every coordinator
//     records at the end (FleetCheck).
//   - Power: N BMCs (internal/bmcfarm, go-ipmi's reference BMC, in a child process)
//     switched on by Rivet's power fan-out of its IPMI driver, against a shell for loop
//     of `ipmitool -I lanplus -C 3 ... chassis power on` and the same under xargs -P.
//
// The agent's inventory bench lives with the agent (`rivet-agent bench inventory`).
//
// bench is not linked into the coordinator or the agent binaries: it drives agent code and
// test harnesses (coordinatortest, dhcptest, disktest, imagetest), which the rivet binary
// must not carry (coordinator/cmd/rivet/deps_test.go).
package bench
