package pgstore

// Migrations are the schema's migrations, for tests that build a
// database of an earlier version.
var Migrations = migrations
