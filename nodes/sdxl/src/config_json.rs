//! The `config.json` files diffusers and transformers write beside a model's weights, read field
//! by field with messages that name the field and what it must hold.

use serde_json::Value;

/// A parsed `config.json`.
pub(crate) struct ConfigJson(Value);

impl ConfigJson {
    /// Parses `text`.
    ///
    /// # Errors
    /// A message when it is not a JSON object.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        match serde_json::from_str(text) {
            Ok(value @ Value::Object(_)) => Ok(Self(value)),
            Ok(_) => Err("not a JSON object".into()),
            Err(e) => Err(format!("not JSON: {e}")),
        }
    }

    /// The field `name`, unless it is absent or `null`.
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// Whether the field `name` is there and `null`.
    pub(crate) fn is_null(&self, name: &str) -> bool {
        self.0.get(name).is_some_and(Value::is_null)
    }

    /// The whole number `name`.
    pub(crate) fn number(&self, name: &str) -> Result<usize, String> {
        let value = self.get(name).ok_or_else(|| format!("missing \"{name}\""))?;
        whole(value).ok_or_else(|| format!("\"{name}\" must be a whole number, not {value}"))
    }

    /// The whole number `name`, or `default` when it is absent.
    pub(crate) fn number_or(&self, name: &str, default: usize) -> Result<usize, String> {
        self.get(name).map_or(Ok(default), |_| self.number(name))
    }

    /// The real number `name`, or `default` when it is absent.
    pub(crate) fn real_or(&self, name: &str, default: f64) -> Result<f64, String> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => value
                .as_f64()
                .ok_or_else(|| format!("\"{name}\" must be a number, not {value}")),
        }
    }

    /// The text `name`, if given.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Value::as_str)
    }

    /// The list of texts `name`.
    pub(crate) fn texts(&self, name: &str) -> Result<Vec<String>, String> {
        let items = self
            .get(name)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("\"{name}\" must be a list of names"))?;
        items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("\"{name}\" must hold names"))
            })
            .collect()
    }

    /// The list of whole numbers `name`.
    pub(crate) fn numbers(&self, name: &str) -> Result<Vec<usize>, String> {
        let value = self.get(name).ok_or_else(|| format!("missing \"{name}\""))?;
        let items = value
            .as_array()
            .ok_or_else(|| format!("\"{name}\" must be a list of whole numbers, not {value}"))?;
        items
            .iter()
            .map(|v| whole(v).ok_or_else(|| format!("\"{name}\" must hold whole numbers, not {v}")))
            .collect()
    }

    /// `name` per level: a whole number for every one of `levels` levels, or a list of one
    /// each; `default` for every level when absent.
    pub(crate) fn per_level(&self, name: &str, levels: usize, default: usize) -> Result<Vec<usize>, String> {
        match self.get(name) {
            None => Ok(vec![default; levels]),
            Some(Value::Array(_)) => {
                let values = self.numbers(name)?;
                if values.len() != levels {
                    return Err(format!("\"{name}\" has {} values for {levels} levels", values.len()));
                }
                Ok(values)
            }
            Some(_) => Ok(vec![self.number(name)?; levels]),
        }
    }

    /// `name` per level and per layer of each level: a whole number for every layer, a list of
    /// one per level (each level's layers alike), or a list per level of one per layer, as
    /// diffusers' `transformer_layers_per_block` allows; `default` everywhere when absent.
    pub(crate) fn per_layer(
        &self,
        name: &str,
        levels: usize,
        layers: usize,
        default: usize,
    ) -> Result<Vec<Vec<usize>>, String> {
        let Some(Value::Array(items)) = self.get(name) else {
            return Ok(self
                .per_level(name, levels, default)?
                .into_iter()
                .map(|n| vec![n; layers])
                .collect());
        };
        if items.len() != levels {
            return Err(format!("\"{name}\" has {} values for {levels} levels", items.len()));
        }
        items
            .iter()
            .enumerate()
            .map(|(level, item)| match item {
                Value::Array(per_layer) if per_layer.len() == layers => per_layer
                    .iter()
                    .map(|v| whole(v).ok_or_else(|| format!("\"{name}\" must hold whole numbers, not {v}")))
                    .collect(),
                Value::Array(per_layer) => Err(format!(
                    "\"{name}\" has {} values for level {level}'s {layers} layers",
                    per_layer.len()
                )),
                other => whole(other)
                    .map(|n| vec![n; layers])
                    .ok_or_else(|| format!("\"{name}\" must hold whole numbers or lists of them, not {other}")),
            })
            .collect()
    }
}

fn whole(value: &Value) -> Option<usize> {
    value.as_u64().and_then(|n| usize::try_from(n).ok())
}
