package sqlitestore

import "database/sql"

// ReadDB returns the store's read-only connections (query_only), for a
// copy of the whole store into another (pgstore.Store.Import). The store
// keeps them: the caller must not close them.
func (s *Store) ReadDB() *sql.DB { return s.r }
