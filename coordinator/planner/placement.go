package planner

import (
	"fmt"
	"sort"
	"strings"

	"github.com/rivetmetal/rivet/shared"
)

// Candidate is one machine that is, or will be, in the Swarm.
type Candidate struct {
	ID     shared.MachineID
	Labels map[string]string
	// Swarm is its role's swarm part: auto, manager or worker. Machines of swarm none
	// roles may be passed; they are left out.
	Swarm string
	// Placed is the swarm role its current plan already gives it ("" when it has none yet).
	// It is kept: a joined node changes role only when an operator re-plans it.
	Placed string
	// Init: its current plan designates it to create the swarm.
	Init bool
	// Joined: it has reported a swarm node id, so a swarm exists.
	Joined bool
}

// PlacementOptions tune manager placement. The zero value means the defaults.
type PlacementOptions struct {
	// FiveAbove: a fleet of more than this many swarm machines wants 5 managers, a smaller
	// one 3. Default 50.
	FiveAbove int
	// DomainLabel is the machine label that names its failure domain. Default "rack".
	DomainLabel string
}

// Defaults for PlacementOptions.
const (
	DefaultFiveAbove   = 50
	DefaultDomainLabel = "rack"
)

func (o PlacementOptions) withDefaults() PlacementOptions {
	if o.FiveAbove <= 0 {
		o.FiveAbove = DefaultFiveAbove
	}
	if o.DomainLabel == "" {
		o.DomainLabel = DefaultDomainLabel
	}
	return o
}

// Placement is the verdict for a whole fleet.
type Placement struct {
	Roles    map[shared.MachineID]string // manager or worker, for every swarm machine
	Want     int                         // managers this fleet size wants
	Managers int                         // managers placed
	// Initiator is the one manager that creates the swarm: the one whose plan already
	// says so, else, while no swarm exists, the newly placed manager with the smallest
	// id. Empty when the swarm exists or a manager planned earlier creates it.
	Initiator shared.MachineID
	// NewInitiator: Initiator is designated by this placement (its plan does not say so yet).
	NewInitiator bool
	Notes        []string // what an operator should know, e.g. too few machines
}

// PlaceManagers returns the swarm role of every swarm machine in fleet; see Place.
func PlaceManagers(fleet []Candidate, opts PlacementOptions) map[shared.MachineID]string {
	return Place(fleet, opts).Roles
}

// Place chooses the Swarm managers. A fleet wants 3 managers, or 5 when it has more than
// opts.FiveAbove machines. Machines whose role fixes their part keep it, and so do
// machines already placed: placement only ever adds managers, so a growing fleet never
// demotes or re-joins a running node. New managers are taken round-robin over failure
// domains, each time from the domain with the fewest managers (ties: the domain whose next
// machine has the smallest id), and within a domain by smallest machine id. The result
// depends only on the input, never on its order.
func Place(fleet []Candidate, opts PlacementOptions) Placement {
	opts = opts.withDefaults()
	p := Placement{Roles: map[shared.MachineID]string{}}
	perDomain := map[string]int{}    // managers per failure domain
	pool := map[string][]Candidate{} // unplaced auto machines per failure domain
	size := 0
	for _, c := range fleet {
		domain := c.Labels[opts.DomainLabel]
		switch {
		case c.Swarm == shared.SwarmManager || (c.Swarm == shared.SwarmAuto && c.Placed == shared.SwarmManager):
			p.Roles[c.ID] = shared.SwarmManager
			perDomain[domain]++
		case c.Swarm == shared.SwarmWorker || (c.Swarm == shared.SwarmAuto && c.Placed == shared.SwarmWorker):
			p.Roles[c.ID] = shared.SwarmWorker
		case c.Swarm == shared.SwarmAuto:
			pool[domain] = append(pool[domain], c)
		default:
			continue // swarm none, or not a swarm machine at all
		}
		size++
	}
	p.Want = 3
	if size > opts.FiveAbove {
		p.Want = 5
	}
	for _, cs := range pool {
		sort.Slice(cs, func(a, b int) bool { return cs[a].ID < cs[b].ID })
	}
	for p.managers() < p.Want {
		domain, ok := nextDomain(pool, perDomain)
		if !ok {
			break
		}
		c := pool[domain][0]
		pool[domain] = pool[domain][1:]
		p.Roles[c.ID] = shared.SwarmManager
		perDomain[domain]++
	}
	for _, cs := range pool {
		for _, c := range cs {
			p.Roles[c.ID] = shared.SwarmWorker
		}
	}
	p.Managers = p.managers()
	p.Initiator, p.NewInitiator = initiator(fleet, p.Roles)
	p.Notes = notes(p, perDomain, opts.DomainLabel)
	return p
}

// initiator designates the manager that creates the swarm. Exactly one machine may: a
// machine asking first must not win (a fake machine could ask first). A machine whose
// plan already says init keeps it. Otherwise a new one is designated only while no
// machine has joined a swarm, and only among managers without a plan yet (a plan is
// never changed under a machine): the smallest id, so the choice depends only on the
// fleet, never on who asks first.
func initiator(fleet []Candidate, roles map[shared.MachineID]string) (shared.MachineID, bool) {
	var best shared.MachineID
	for _, c := range fleet {
		if c.Init && roles[c.ID] == shared.SwarmManager && (best == "" || c.ID < best) {
			best = c.ID
		}
	}
	if best != "" {
		return best, false
	}
	for _, c := range fleet {
		if c.Joined || c.Init {
			return "", false
		}
	}
	for _, c := range fleet {
		if c.Placed == "" && roles[c.ID] == shared.SwarmManager && (best == "" || c.ID < best) {
			best = c.ID
		}
	}
	return best, best != ""
}

func (p *Placement) managers() int {
	n := 0
	for _, r := range p.Roles {
		if r == shared.SwarmManager {
			n++
		}
	}
	return n
}

// nextDomain picks the failure domain that gets the next manager: fewest managers so far,
// then smallest next machine id.
func nextDomain(pool map[string][]Candidate, perDomain map[string]int) (string, bool) {
	best, found := "", false
	for d, cs := range pool {
		if len(cs) == 0 {
			continue
		}
		if !found || perDomain[d] < perDomain[best] ||
			(perDomain[d] == perDomain[best] && cs[0].ID < pool[best][0].ID) {
			best, found = d, true
		}
	}
	return best, found
}

// notes explains the placement where it is not what an operator would assume.
func notes(p Placement, perDomain map[string]int, label string) []string {
	var out []string
	switch {
	case p.Managers < p.Want:
		out = append(out, fmt.Sprintf("only %d of %d wanted managers: every machine that can be a manager is one; "+
			"machines that join later become managers until there are %d", p.Managers, p.Want, p.Want))
	case p.Managers > p.Want:
		out = append(out, fmt.Sprintf("%d managers, more than the %d wanted: roles with swarm manager fix them",
			p.Managers, p.Want))
	}
	if p.Managers > 0 && p.Managers%2 == 0 {
		out = append(out, fmt.Sprintf("an even number of managers (%d) survives no more manager failures than %d",
			p.Managers, p.Managers-1))
	}
	var domains []string
	for d, n := range perDomain {
		if n > 0 {
			domains = append(domains, d)
		}
	}
	sort.Strings(domains)
	if p.Managers > 1 && len(domains) == 1 {
		where := fmt.Sprintf("%s %s", label, domains[0])
		if domains[0] == "" {
			where = fmt.Sprintf("machines without a %s label", label)
		}
		out = append(out, fmt.Sprintf("all %d managers are in one failure domain (%s): losing it stops the swarm's "+
			"control plane; label machines with %s=<name> to spread them", p.Managers, where, label))
	}
	return out
}

// String summarises a placement for logs and the dry run.
func (p Placement) String() string {
	s := fmt.Sprintf("%d of %d managers", p.Managers, p.Want)
	if len(p.Notes) > 0 {
		s += ": " + strings.Join(p.Notes, "; ")
	}
	return s
}
