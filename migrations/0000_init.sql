CREATE TABLE `accounts` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`credit_nano` integer DEFAULT 0 NOT NULL,
	`created_at` integer DEFAULT (unixepoch('subsec') * 1000) NOT NULL
);
--> statement-breakpoint
CREATE TABLE `api_keys` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`name` text DEFAULT '' NOT NULL,
	`prefix` text NOT NULL,
	`hash` text NOT NULL,
	`scopes` text DEFAULT '["invoke"]' NOT NULL,
	`expires_at` integer,
	`revoked_at` integer,
	`created_at` integer DEFAULT (unixepoch('subsec') * 1000) NOT NULL,
	FOREIGN KEY (`account_id`) REFERENCES `accounts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `api_keys_hash_unique` ON `api_keys` (`hash`);--> statement-breakpoint
CREATE INDEX `api_keys_account_idx` ON `api_keys` (`account_id`);--> statement-breakpoint
CREATE TABLE `chutes` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text NOT NULL,
	`owner_account_id` text NOT NULL,
	`model_ref` text NOT NULL,
	`engine` text NOT NULL,
	`context_length` integer NOT NULL,
	`max_output_tokens` integer NOT NULL,
	`prompt_price_nano_per_m` integer DEFAULT 0 NOT NULL,
	`completion_price_nano_per_m` integer DEFAULT 0 NOT NULL,
	`concurrency` integer DEFAULT 1 NOT NULL,
	`min_instances` integer DEFAULT 0 NOT NULL,
	`max_instances` integer DEFAULT 1 NOT NULL,
	`public` integer DEFAULT true NOT NULL,
	`created_at` integer DEFAULT (unixepoch('subsec') * 1000) NOT NULL,
	FOREIGN KEY (`owner_account_id`) REFERENCES `accounts`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE UNIQUE INDEX `chutes_name_unique` ON `chutes` (`name`);--> statement-breakpoint
CREATE TABLE `invocations` (
	`id` text PRIMARY KEY NOT NULL,
	`account_id` text NOT NULL,
	`api_key_id` text NOT NULL,
	`chute_id` text NOT NULL,
	`miner_id` text,
	`instance_id` text,
	`endpoint` text NOT NULL,
	`stream` integer NOT NULL,
	`outcome` text NOT NULL,
	`error_code` text,
	`finish_reason` text,
	`attempts` integer NOT NULL,
	`prompt_tokens` integer DEFAULT 0 NOT NULL,
	`completion_tokens` integer DEFAULT 0 NOT NULL,
	`cost_nano` integer DEFAULT 0 NOT NULL,
	`ttft_ms` integer,
	`duration_ms` integer NOT NULL,
	`created_at` integer DEFAULT (unixepoch('subsec') * 1000) NOT NULL
);
--> statement-breakpoint
CREATE INDEX `invocations_account_idx` ON `invocations` (`account_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `invocations_chute_idx` ON `invocations` (`chute_id`);--> statement-breakpoint
CREATE TABLE `miners` (
	`id` text PRIMARY KEY NOT NULL,
	`name` text DEFAULT '' NOT NULL,
	`token_hash` text NOT NULL,
	`status` text DEFAULT 'active' NOT NULL,
	`last_seen_at` integer,
	`created_at` integer DEFAULT (unixepoch('subsec') * 1000) NOT NULL
);
