-- Round 1's schema, as SQLModel.metadata.create_all made it on a plant's sqlite database:
-- inspect_app at commit 8292f88 with sqlmodel 0.0.44 and SQLAlchemy 2.0.58 (DDL dumped
-- through create_mock_engine). Frozen: a round-1 plant database is this, whatever tables.py
-- becomes.

CREATE TABLE line (
	id VARCHAR(64) NOT NULL,
	level VARCHAR(16) NOT NULL,
	pass_threshold FLOAT NOT NULL,
	fail_threshold FLOAT NOT NULL,
	audit_rate FLOAT NOT NULL,
	max_escape_rate FLOAT NOT NULL,
	max_false_reject_rate FLOAT NOT NULL,
	min_labels INTEGER NOT NULL,
	auto_demote BOOLEAN NOT NULL,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (id)
);

CREATE TABLE user (
	id INTEGER NOT NULL,
	name VARCHAR(64) NOT NULL,
	role VARCHAR(16) NOT NULL,
	password_hash VARCHAR NOT NULL,
	active BOOLEAN NOT NULL,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id)
);

CREATE UNIQUE INDEX ix_user_name ON user (name);

CREATE TABLE event (
	id INTEGER NOT NULL,
	at DATETIME NOT NULL,
	line_id VARCHAR(64),
	kind VARCHAR(32) NOT NULL,
	actor VARCHAR(64) NOT NULL,
	reason VARCHAR NOT NULL,
	details JSON,
	PRIMARY KEY (id)
);

CREATE INDEX ix_event_at ON event (at);

CREATE INDEX ix_event_line_id ON event (line_id);

CREATE TABLE apitoken (
	id INTEGER NOT NULL,
	user_id INTEGER NOT NULL,
	token_hash VARCHAR(128) NOT NULL,
	created_at DATETIME NOT NULL,
	revoked_at DATETIME,
	PRIMARY KEY (id),
	FOREIGN KEY(user_id) REFERENCES user (id)
);

CREATE UNIQUE INDEX ix_apitoken_token_hash ON apitoken (token_hash);

CREATE INDEX ix_apitoken_user_id ON apitoken (user_id);

CREATE TABLE camerakey (
	id INTEGER NOT NULL,
	line_id VARCHAR(64) NOT NULL,
	key_hash VARCHAR(128) NOT NULL,
	key_prefix VARCHAR(16) NOT NULL,
	created_at DATETIME NOT NULL,
	revoked_at DATETIME,
	PRIMARY KEY (id),
	FOREIGN KEY(line_id) REFERENCES line (id)
);

CREATE UNIQUE INDEX ix_camerakey_key_hash ON camerakey (key_hash);

CREATE INDEX ix_camerakey_line_id ON camerakey (line_id);

CREATE TABLE inspection (
	id INTEGER NOT NULL,
	line_id VARCHAR(64) NOT NULL,
	capture_id VARCHAR(128),
	part_serial VARCHAR(128),
	captured_at DATETIME,
	received_at DATETIME NOT NULL,
	source VARCHAR(16) NOT NULL,
	true_class VARCHAR(32),
	image_sha256 VARCHAR(64) NOT NULL,
	image_format VARCHAR(8) NOT NULL,
	width INTEGER NOT NULL,
	height INTEGER NOT NULL,
	brightness FLOAT NOT NULL,
	contrast FLOAT NOT NULL,
	sharpness FLOAT NOT NULL,
	model_version VARCHAR(64),
	probabilities JSON,
	predicted_class VARCHAR(32),
	confidence FLOAT,
	p_defect FLOAT,
	level VARCHAR(16) NOT NULL,
	pass_threshold FLOAT NOT NULL,
	fail_threshold FLOAT NOT NULL,
	route VARCHAR(8) NOT NULL,
	show_model BOOLEAN NOT NULL,
	decision VARCHAR(8) NOT NULL,
	decided_by VARCHAR(8),
	decided_at DATETIME,
	decode_ms FLOAT NOT NULL,
	queue_ms FLOAT NOT NULL,
	model_ms FLOAT NOT NULL,
	persist_ms FLOAT NOT NULL,
	total_ms FLOAT NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_inspection_line_capture UNIQUE (line_id, capture_id),
	FOREIGN KEY(line_id) REFERENCES line (id)
);

CREATE INDEX ix_inspection_line_received ON inspection (line_id, received_at);

CREATE INDEX ix_inspection_decision ON inspection (decision);

CREATE INDEX ix_inspection_image_sha256 ON inspection (image_sha256);

CREATE TABLE reviewtask (
	id INTEGER NOT NULL,
	inspection_id INTEGER NOT NULL,
	line_id VARCHAR(64) NOT NULL,
	reason VARCHAR(16) NOT NULL,
	priority INTEGER NOT NULL,
	show_model BOOLEAN NOT NULL,
	status VARCHAR(16) NOT NULL,
	claimed_by INTEGER,
	claimed_at DATETIME,
	lease_expires_at DATETIME,
	created_at DATETIME NOT NULL,
	completed_at DATETIME,
	note VARCHAR,
	PRIMARY KEY (id),
	UNIQUE (inspection_id),
	FOREIGN KEY(inspection_id) REFERENCES inspection (id),
	FOREIGN KEY(line_id) REFERENCES line (id),
	FOREIGN KEY(claimed_by) REFERENCES user (id)
);

CREATE INDEX ix_task_queue ON reviewtask (status, priority, created_at);

CREATE INDEX ix_reviewtask_line_id ON reviewtask (line_id);

CREATE INDEX ix_task_waiting ON reviewtask (priority, created_at, id);

CREATE TABLE label (
	id INTEGER NOT NULL,
	inspection_id INTEGER NOT NULL,
	task_id INTEGER,
	user_id INTEGER NOT NULL,
	label VARCHAR(32) NOT NULL,
	note VARCHAR,
	model_shown BOOLEAN NOT NULL,
	duration_ms INTEGER,
	created_at DATETIME NOT NULL,
	superseded BOOLEAN NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(inspection_id) REFERENCES inspection (id),
	FOREIGN KEY(task_id) REFERENCES reviewtask (id),
	FOREIGN KEY(user_id) REFERENCES user (id)
);

CREATE INDEX ix_label_created_at ON label (created_at);

CREATE INDEX ix_label_inspection_id ON label (inspection_id);

CREATE INDEX ix_label_superseded ON label (superseded);

CREATE INDEX ix_label_user_id ON label (user_id);
