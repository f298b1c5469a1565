/*
 * schema.c - the store's schema, as an ordered list of migrations.
 *
 * Migration i turns schema i into schema i + 1; db.c applies the missing
 * ones at open, each in one transaction.  A released migration is never
 * edited: a change to the schema is a new entry at the end, so every
 * database in the field reaches the same schema by the same steps.
 *
 * The shape, and why:
 *  - documents are (path, content) pairs of one corpus, unique on
 *    (corpus, path, sha256).  A version lists document ids by position, so
 *    re-ingesting an unchanged file references the existing row instead of
 *    storing its text again, and old versions stay intact beside new ones.
 *  - document_fts is an FTS5 index over documents.text kept in step by
 *    triggers (external content: the text is stored once).
 *  - contexts hold a rendered version's token ids and, per document, the
 *    byte and token ranges and the line -> byte/token offsets as packed
 *    little-endian int64 arrays: millions of lines as rows would make the
 *    table larger than the text it maps.
 *  - kv_states and restart_points describe state files; the files
 *    themselves live in STATE_DIR/kv/.
 *  - access tokens keep only a SHA-256 of the secret.
 */
#include "store/store-internal.h"

static const char schema_1[] =
    "CREATE TABLE corpora ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  created_at INTEGER NOT NULL);"

    "CREATE TABLE documents ("
    "  id INTEGER PRIMARY KEY,"
    "  corpus_id INTEGER NOT NULL REFERENCES corpora(id) ON DELETE CASCADE,"
    "  path TEXT NOT NULL,"
    "  size INTEGER NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  media_type TEXT NOT NULL,"
    "  encoding TEXT NOT NULL,"
    "  mtime INTEGER NOT NULL,"
    "  line_count INTEGER NOT NULL,"
    "  text TEXT NOT NULL,"
    "  UNIQUE (corpus_id, path, sha256));"

    "CREATE VIRTUAL TABLE document_fts USING fts5("
    "  text, content='documents', content_rowid='id');"
    "CREATE TRIGGER documents_fts_insert AFTER INSERT ON documents BEGIN"
    "  INSERT INTO document_fts(rowid, text) VALUES (new.id, new.text);"
    "END;"
    "CREATE TRIGGER documents_fts_delete AFTER DELETE ON documents BEGIN"
    "  INSERT INTO document_fts(document_fts, rowid, text) VALUES ('delete', old.id, old.text);"
    "END;"

    "CREATE TABLE corpus_versions ("
    "  id INTEGER PRIMARY KEY,"
    "  corpus_id INTEGER NOT NULL REFERENCES corpora(id) ON DELETE CASCADE,"
    "  number INTEGER NOT NULL,"
    "  source TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  n_documents INTEGER NOT NULL,"
    "  added INTEGER NOT NULL,"
    "  changed INTEGER NOT NULL,"
    "  removed INTEGER NOT NULL,"
    "  first_changed_position INTEGER,"
    "  UNIQUE (corpus_id, number));"

    "CREATE TABLE version_documents ("
    "  version_id INTEGER NOT NULL REFERENCES corpus_versions(id) ON DELETE CASCADE,"
    "  position INTEGER NOT NULL,"
    "  document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    "  PRIMARY KEY (version_id, position)) WITHOUT ROWID;"
    "CREATE INDEX version_documents_by_document ON version_documents(document_id);"

    "CREATE TABLE contexts ("
    "  id INTEGER PRIMARY KEY,"
    "  version_id INTEGER NOT NULL REFERENCES corpus_versions(id) ON DELETE CASCADE,"
    "  tokenizer TEXT NOT NULL,"
    "  line_numbers INTEGER NOT NULL,"
    "  text_bytes INTEGER NOT NULL,"
    "  token_count INTEGER,"
    "  token_ids BLOB,"
    "  created_at INTEGER NOT NULL);"
    "CREATE INDEX contexts_by_version ON contexts(version_id);"

    "CREATE TABLE context_documents ("
    "  context_id INTEGER NOT NULL REFERENCES contexts(id) ON DELETE CASCADE,"
    "  position INTEGER NOT NULL,"
    "  document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,"
    "  byte_start INTEGER NOT NULL,"
    "  byte_end INTEGER NOT NULL,"
    "  token_start INTEGER,"
    "  token_end INTEGER,"
    "  n_lines INTEGER NOT NULL,"
    "  line_bytes BLOB NOT NULL,"
    "  line_tokens BLOB,"
    "  PRIMARY KEY (context_id, position)) WITHOUT ROWID;"

    "CREATE TABLE kv_states ("
    "  id INTEGER PRIMARY KEY,"
    "  version_id INTEGER NOT NULL REFERENCES corpus_versions(id) ON DELETE CASCADE,"
    "  context_id INTEGER REFERENCES contexts(id) ON DELETE SET NULL,"
    "  model_fingerprint TEXT NOT NULL,"
    "  token_count INTEGER NOT NULL,"
    "  path TEXT NOT NULL UNIQUE,"
    "  bytes INTEGER NOT NULL,"
    "  status TEXT NOT NULL CHECK (status IN ('writing', 'ready', 'failed', 'evicted')),"
    "  created_at INTEGER NOT NULL,"
    "  last_used_at INTEGER NOT NULL);"

    "CREATE TABLE restart_points ("
    "  id INTEGER PRIMARY KEY,"
    "  state_id INTEGER NOT NULL REFERENCES kv_states(id) ON DELETE CASCADE,"
    "  token_count INTEGER NOT NULL,"
    "  file_offset INTEGER NOT NULL,"
    "  bytes INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  UNIQUE (state_id, token_count));"

    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY,"
    "  kind TEXT NOT NULL,"
    "  corpus_id INTEGER REFERENCES corpora(id) ON DELETE SET NULL,"
    "  state TEXT NOT NULL"
    "    CHECK (state IN ('queued', 'running', 'done', 'failed', 'canceled')),"
    "  done INTEGER NOT NULL DEFAULT 0,"
    "  total INTEGER NOT NULL DEFAULT 0,"
    "  error TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  started_at INTEGER,"
    "  finished_at INTEGER);"

    "CREATE TABLE questions ("
    "  id INTEGER PRIMARY KEY,"
    "  corpus_id INTEGER NOT NULL REFERENCES corpora(id) ON DELETE CASCADE,"
    "  version_id INTEGER REFERENCES corpus_versions(id) ON DELETE SET NULL,"
    "  state_id INTEGER REFERENCES kv_states(id) ON DELETE SET NULL,"
    "  question TEXT NOT NULL,"
    "  answer TEXT,"
    "  prompt_tokens INTEGER NOT NULL,"
    "  answer_tokens INTEGER NOT NULL,"
    "  prefill_seconds REAL NOT NULL,"
    "  decode_seconds REAL NOT NULL,"
    "  created_at INTEGER NOT NULL);"
    "CREATE INDEX questions_by_corpus ON questions(corpus_id, id);"

    "CREATE TABLE access_tokens ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  hash TEXT NOT NULL UNIQUE,"
    "  corpus TEXT,"
    "  can_read INTEGER NOT NULL,"
    "  can_write INTEGER NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL,"
    "  last_used_at INTEGER);";

const char *const store_migrations[] = {schema_1};
const int store_n_migrations = (int)(sizeof store_migrations / sizeof store_migrations[0]);

_Static_assert(sizeof store_migrations / sizeof store_migrations[0] == STORE_SCHEMA_VERSION,
               "STORE_SCHEMA_VERSION in store.h must count the migrations");
