package admin

import (
	"context"

	"github.com/linegate/linegate/internal/rules"
)

// Reload loads the rule files again and swaps the set in, as POST
// /admin/rules/reload does; the record of the reload names trigger (who
// asked, such as "console (alice)"), and the other replicas reload too.
// A rule file that does not load leaves the running rules.
func (a *API) Reload(ctx context.Context, trigger string) (*rules.Set, error) {
	return a.reload(ctx, trigger)
}
