package cli

import (
	"context"
	"errors"
)

func benchStore(context.Context, *Env, []string) error { return errors.New("not yet") }
