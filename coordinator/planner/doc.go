// Package planner decides, from the replicated state alone, what each machine becomes:
// which role it matches, which disk it installs to, which steps its plan has, and which
// machines are Swarm managers. It is pure: no I/O, no clocks, no randomness, so every
// coordinator computes the same answer from the same state and every rule is a table test.
//
// Decisions an operator may want to know:
//
//   - A machine matches exactly one role. No match and several matches are both shown as a
//     problem on the machine; nothing is guessed. The "closest" role in a no-match message
//     is the one failing the fewest selector fields (ties: the first by name).
//   - Disk sizes are decimal GB (as disks are sold), memory is binary GiB (as DIMMs are).
//     Memory counts the DIMMs when the firmware lists them; otherwise the kernel's total,
//     which lacks a few percent reserved by firmware and kernel, is allowed 5% less.
//   - min_nics and min_nic_speed_mbps together mean "that many physical NICs at that speed";
//     bridges, veths and bonds never count.
//   - pci_vendor is a hex vendor id ("8086", "0x15b3") or a case-insensitive part of the
//     vendor's name ("mellanox").
//   - The install disk must carry a serial or a WWN, whatever the rule: the agent refuses to
//     wipe a disk it cannot identify, so such a plan is refused here already. A disk named
//     by serial or WWN may be removable (the operator chose it); "smallest" never picks a
//     removable disk.
//   - Managers: 3, or 5 above PlacementOptions.FiveAbove swarm machines (default 50),
//     spread round-robin over failure domains (label "rack" by default). Machines without
//     the label share one domain. Placement only adds: a placed machine keeps its role as
//     the fleet grows, so new manager slots go to machines not yet placed.
package planner
