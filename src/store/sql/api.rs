//! The public surface the SQLite and PostgreSQL stores share, written once for their two
//! option types and two store types ([`sql_store_api!`]).

/// Writes, for a SQL store `$store` configured by `$options`:
///
/// - the options every SQL backend takes (`migrate`, `owner`, `encryption_keys`), on
///   `$options`, which has the fields `migrate: bool`, `owner: Option<String>` and
///   `signers: Signers`;
/// - the store's `connect`, `builder`, `migrate` (on its pool `inner.$pool`, through
///   `$run`) and `migrator`, from the module's `MIGRATIONS`;
/// - the store's `Debug`, showing the `inner` fields listed (the signers print redacted).
///
/// A macro because the two backends' types differ (a file path or a URL, a pool of SQLite or
/// PostgreSQL connections) while the code and its documentation are the same.
macro_rules! sql_store_api {
    (
        store: $store:ident,
        options: $options:ident,
        target: $target:ident: $target_ty:ty,
        connect_doc: $connect_doc:literal,
        builder_doc: $builder_doc:literal,
        migrations: $run:path, on $pool:ident,
        debug: [$($field:ident),* $(,)?] $(,)?
    ) => {
        impl $options {
            /// Whether [`connect`](Self::connect) runs the migrations (on by default; concurrent
            /// PostgreSQL replicas serialise on an advisory lock). When off, call the store's
            /// `migrate` yourself.
            ///
            /// Their history is kept in the `tower_webhooks_migrations` table (in the configured
            /// schema on PostgreSQL), not in sqlx's `_sqlx_migrations`, so the application's own
            /// `sqlx::migrate!()` can run on the same database, before or after.
            pub fn migrate(mut self, migrate: bool) -> Self {
                self.migrate = migrate;
                self
            }

            /// The lease owner recorded on claimed rows (by default the process id and a random
            /// suffix); useful to tell replicas apart when looking at the table.
            pub fn owner(mut self, owner: impl Into<String>) -> Self {
                self.owner = Some(owner.into());
                self
            }

            /// Encrypts the secrets the store keeps (signing secrets and custom header values,
            /// on PostgreSQL also those of the registry's `PostgresSubscriptions` built on the
            /// store) with the newest key of `keys`; older keys still decrypt, and values
            /// written before a key was configured still read. Without keys,
            /// [`connect`](Self::connect) logs a warning. Every process sharing the database
            /// needs the same ring. See [`EncryptionKeys`](crate::store::EncryptionKeys).
            pub fn encryption_keys(mut self, keys: crate::store::EncryptionKeys) -> Self {
                self.signers.set_keys(keys);
                self
            }
        }

        impl $store {
            #[doc = $connect_doc]
            #[doc = concat!(" ([`", stringify!($options), "::new`]).")]
            ///
            /// # Errors
            ///
            #[doc = concat!("As [`", stringify!($options), "::connect`].")]
            pub async fn connect($target: $target_ty) -> Result<Self, StoreError> {
                $options::new($target).connect().await
            }

            #[doc = $builder_doc]
            pub fn builder($target: $target_ty) -> $options {
                $options::new($target)
            }

            #[doc = concat!(
                "Runs the migrations (when [`", stringify!($options), "::migrate`] was turned off)."
            )]
            ///
            /// # Errors
            ///
            /// [`StoreError::Backend`] when a migration fails.
            pub async fn migrate(&self) -> Result<(), StoreError> {
                $run(&self.inner.$pool, MIGRATIONS).await
            }

            /// The migrations as a sqlx [`Migrator`](sqlx::migrate::Migrator), to run them with
            /// your own tooling.
            ///
            /// A sqlx migrator records them in `_sqlx_migrations`, beside the application's own;
            #[doc = concat!(
                "[`migrate`](Self::migrate) and [`connect`](", stringify!($options), "::connect)"
            )]
            /// keep the crate's history in `tower_webhooks_migrations` (in the store's schema
            /// on PostgreSQL) instead, out of the way of the application's `sqlx::migrate!()`.
            /// Use one or the other on a database, not both.
            pub async fn migrator() -> sqlx::migrate::Migrator {
                $crate::store::migrations::migrator(MIGRATIONS).await
            }
        }

        impl std::fmt::Debug for $store {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($store))
                    $(.field(stringify!($field), &self.inner.$field))*
                    .finish_non_exhaustive()
            }
        }
    };
}

pub(crate) use sql_store_api;
