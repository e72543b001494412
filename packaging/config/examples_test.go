// Package config holds example configuration files; its test keeps them valid.
package config

import (
	"os"
	"testing"

	"github.com/rivetmetal/rivet/shared"
)

func TestRolesExampleParses(t *testing.T) {
	data, err := os.ReadFile("roles.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	list, err := shared.ParseRoles(data)
	if err != nil {
		t.Fatalf("roles.example.yaml: %v", err)
	}
	if len(list.Roles) != 2 {
		t.Fatalf("%d roles, want 2", len(list.Roles))
	}
}
